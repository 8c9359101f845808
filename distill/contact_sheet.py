"""A contact sheet: a few prompts streamed by a model, one row per prompt, frames sampled over time.

    python -m distill.contact_sheet --model shapes --out docs/shapes_contact_sheet.png \\
        [--prompts FILE] [--count 6] [--seconds 4] [--columns 6] [--scale 2] [--seed 0]

Each row: the prompt as a caption, then `columns` frames evenly spaced over `seconds` of the
stream (the same frames `framecast generate` would give for that prompt and seed), each scaled
up `scale` times with nearest-neighbour pixels so the 64x64 frames stay readable.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from distill.config import EvalConfig

CAPTION_HEIGHT = 16  # pixels of text above each row
GAP = 4  # pixels between frames


def stream_frames(gen, prompt: str, seed: int, frames: int) -> np.ndarray:
    """The first `frames` frames `[frames, H, W, 3]` uint8 of `prompt`'s stream."""
    out, total = [], 0
    for chunk in gen.stream(prompt, seed=seed):
        out.append(chunk.frames)
        total += len(chunk.frames)
        if total >= frames:
            break
    return np.concatenate(out)[:frames]


def contact_sheet(rows: list[tuple[str, np.ndarray]], columns: int, scale: int):
    """Pillow image of `rows` (caption, frames `[T, H, W, 3]`): `columns` frames of each, evenly spaced."""
    from PIL import Image, ImageDraw

    h, w = rows[0][1].shape[1:3]
    cell_w, cell_h = w * scale, h * scale
    width = columns * cell_w + (columns + 1) * GAP
    height = len(rows) * (cell_h + CAPTION_HEIGHT + GAP) + GAP
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (caption, frames) in enumerate(rows):
        top = GAP + r * (cell_h + CAPTION_HEIGHT + GAP)
        draw.text((GAP, top + 2), caption, fill=(0, 0, 0))
        picks = np.linspace(0, len(frames) - 1, columns).round().astype(int)
        for c, t in enumerate(picks):
            tile = Image.fromarray(frames[t]).resize((cell_w, cell_h), Image.NEAREST)
            sheet.paste(tile, (GAP + c * (cell_w + GAP), top + CAPTION_HEIGHT))
    return sheet


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distill.contact_sheet", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="shapes", help="model directory or preset (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--prompts", default=EvalConfig.prompts, help="prompt file (default: %(default)s)")
    p.add_argument("--count", type=int, default=6, help="prompts: the first COUNT of the file (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=4.0, help="stream length sampled per row (default: %(default)s)")
    p.add_argument("--columns", type=int, default=6, help="frames per row (default: %(default)s)")
    p.add_argument("--scale", type=int, default=2, help="pixel scale of each frame (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from distill.eval_cli import read_prompts
    from models import load_generator

    gen = load_generator(args.model, device="cpu", max_batch=1)
    frames = max(args.columns, int(round(args.seconds * gen.info.fps)))
    rows = [(f"{prompt} (seed {args.seed})", stream_frames(gen, prompt, args.seed, frames))
            for prompt in read_prompts(args.prompts)[: args.count]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(rows, args.columns, args.scale).save(args.out)
    print(f"wrote {args.out} ({len(rows)} prompts x {args.columns} frames over {frames / gen.info.fps:g} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
