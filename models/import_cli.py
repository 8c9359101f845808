"""`framecast import BASE -o DIR --family F [--checkpoint FILE] [--lora FILE[:SCALE]]`: a published
causal Wan student (its training checkpoint over a Wan2.1 base folder) as a framecast model directory."""

from __future__ import annotations

import argparse

from models.families import FAMILIES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="turn a Wan2.1 base folder + student checkpoint (+ LoRA) into a model directory")
    p.add_argument("base", help="Wan2.1 folder: the original release layout or diffusers layout")
    p.add_argument("-o", "--output", required=True, help="model directory to write (must not exist, or be empty)")
    p.add_argument("--family", required=True, choices=sorted(FAMILIES),
                   help="whose streaming settings to use (chunking, sink, window, timesteps)")
    p.add_argument("--checkpoint", default=None, help="student training checkpoint (.pt / .safetensors) over the base")
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                   help="LoRA merged into the weights (repeatable), e.g. LongLive's lora.pt")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"],
                   help="storage dtype of the transformer and of umT5 converted from a release .pth (default bf16; a diffusers "
                        "text_encoder/ is copied as it is, the VAE stays fp32)")
    p.add_argument("--width", type=int, default=None, help="video width (default 832)")
    p.add_argument("--height", type=int, default=None, help="video height (default 480)")
    p.add_argument("--fps", type=int, default=None, help="frames per second (default 16)")
    p.add_argument("--name", default=None, help="model name reported by the server (default: the directory name)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from models.importer import import_model

    started = time.perf_counter()
    stream = {k: getattr(args, k) for k in ("width", "height", "fps") if getattr(args, k) is not None}
    out = import_model(args.base, args.output, args.family, checkpoint=args.checkpoint, lora=args.lora,
                       dtype=args.dtype, stream=stream, name=args.name)
    print(f"wrote {out} ({args.family}, {args.dtype}) in {time.perf_counter() - started:.1f} s; "
          f"serve it with: framecast serve --model {out}")
    return 0
