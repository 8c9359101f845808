"""A contact sheet: a few prompts streamed by a model, one row per prompt, frames sampled over time.

    python -m distill.contact_sheet --model shapes --out docs/shapes_contact_sheet.png \\
        [--prompts FILE] [--count 6] [--seconds 4] [--columns 6] [--scale 2] [--seed 0]

Each row: the prompt as a caption, then `columns` frames evenly spaced over `seconds` of the
stream (the same frames `framecast generate` would give for that prompt and seed), each scaled
up `scale` times with nearest-neighbour pixels so the 64x64 frames stay readable.

An avatar model (audio input) streams the first `count` faces of `framecast eval`'s evaluation set
instead, each from its start image (the first column) with its synthetic speech fed from media time 0;
the caption gives the speech's loudness at each column's frame (dB; below -35: silence).
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


def avatar_rows(gen, count: int, frames: int, columns: int) -> list[tuple[str, np.ndarray]]:
    """(caption, [start image, frames...]) of the first `count` evaluation faces speaking (avatar models)."""
    from distill.avatar_data import PROMPT, frame_loudness_db
    from distill.avatar_eval import eval_face
    from models.audio import float_to_pcm_s16le
    from models.stream_api import ChunkInput, Conditioning

    rows = []
    spf = gen.info.audio_sample_rate // gen.info.fps
    for index in range(count):
        image, _, audio = eval_face(index, frames / gen.info.fps + 1.0, gen.info)
        stream = gen.open(Conditioning(PROMPT, seed=index, image=image, inputs=("audio",)))
        out, inputs = [], [[ChunkInput("audio", 0, float_to_pcm_s16le(audio))]]
        try:
            while sum(len(f) for f in out) < frames:
                out.append(gen.step([stream], inputs)[0].frames)
                inputs = [[]]
        finally:
            gen.close_stream(stream)
        video = np.concatenate(out)[:frames]  # [T, H, W, 3]
        db = frame_loudness_db(audio[:frames * spf], spf)
        picks = np.linspace(0, frames - 1, columns - 1).round().astype(int)
        caption = f"face {index}: image, then dB " + " ".join(f"{db[t]:.0f}" for t in picks)
        rows.append((caption, np.concatenate([image[None], video[picks]])))
    return rows


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
    if "audio" in gen.info.inputs:  # each row already holds exactly `columns` pictures
        rows = avatar_rows(gen, args.count, frames, args.columns)
    else:
        rows = [(f"{prompt} (seed {args.seed})", stream_frames(gen, prompt, args.seed, frames))
                for prompt in read_prompts(args.prompts)[: args.count]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(rows, args.columns, args.scale).save(args.out)
    print(f"wrote {args.out} ({len(rows)} prompts x {args.columns} frames over {frames / gen.info.fps:g} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
