"""`framecast generate "PROMPT" -o out.mp4`: render a clip locally with the streaming generator.

It is a video job without HTTP: the model renders in this process and the shared media writer
(client/mp4_writer.py) encodes it, which is why it lives in `server` (server → models, server →
client's media modules are the allowed arrows).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from models.load_args import add_load_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="render a clip from a prompt to an MP4 (runs the model locally)")
    p.add_argument("prompt", help="text prompt")
    p.add_argument("-o", "--output", default="out.mp4", help="MP4 file to write (default: out.mp4)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, help="video length in seconds (default: 5)")
    length.add_argument("--frames", type=int, help="video length in frames")
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed + prompt = same video)")
    p.add_argument("--model", default="shapes", help="model directory or preset name (default: shapes)")
    p.add_argument("--image", type=Path, help="reference image to start the video from")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: first GPU, else CPU)")
    add_load_arguments(p)
    p.set_defaults(func=run)


def _read_image(path: Path):
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from models.errors import ModelError

    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"))
    except FileNotFoundError:
        raise ModelError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ModelError(f"cannot read image {path}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from client.mp4_writer import Mp4Writer
    from models.errors import ModelError
    from models.generator import load_generator

    if args.frames is not None and args.frames <= 0:
        raise ModelError(f"--frames must be positive, got {args.frames}")
    if args.seconds is not None and not (args.seconds > 0 and math.isfinite(args.seconds)):
        raise ModelError(f"--seconds must be positive, got {args.seconds}")
    if not args.prompt.strip():
        raise ModelError("the prompt is empty")
    image = _read_image(args.image) if args.image else None

    started = time.perf_counter()
    try:
        gen = load_generator(args.model, device=args.device, max_batch=1, lora=args.lora, text_device=args.text_device)
    except (ValueError, RuntimeError) as exc:
        raise ModelError(str(exc)) from None
    fps = gen.info.fps
    total = args.frames if args.frames is not None else round((args.seconds or 5.0) * fps)
    out = Path(args.output)
    written = 0
    gen_started = time.perf_counter()
    with Mp4Writer(out, fps=fps) as writer, tqdm(total=total, unit="frame", desc="generating") as bar:
        chunks = gen.stream(args.prompt, seed=args.seed, image=image)
        for chunk in chunks:
            frames = chunk.frames[: total - written]
            writer.write(frames)
            written += len(frames)
            bar.update(len(frames))
            if written >= total:
                break
        chunks.close()
    wall = time.perf_counter() - gen_started
    print(
        f"wrote {out}: {written} frames ({written / fps:.2f} s of video at {gen.info.width}x{gen.info.height}), "
        f"{wall:.2f} s wall, {written / wall:.1f} FPS (load {gen_started - started:.1f} s)"
    )
    return 0
