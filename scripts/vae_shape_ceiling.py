"""The ceiling an autoencoder sets, per shape: `python scripts/vae_shape_ceiling.py DIR [DIR ...] [--seeds 0,1,2,3]`

Encodes (posterior mean) and decodes the eval prompts' ground-truth clips (`stage_quality.ground_truth_clips`,
21 frames) with each DIR's `vae/` (a model directory, or a run folder's model that has only a VAE yet) and scores
them with the eval's scorer (`distill.scoring`). Printed per DIR, and for the clips themselves: the overall score,
every component, the shapes component per shape word (prompts naming one kind of shape only) and the mean
|pixel error| (0-255). No student can draw a shape more faithfully than its decoder returns it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from distill.eval_cli import read_prompts
from distill.stage_quality import ground_truth_clips, reconstruct, score_clips
from models.vae import VideoVAE


def ceiling(clips: list[np.ndarray], prompts: list[str], fps: int) -> dict:
    """{"overall", "components", "shapes_by_kind"} of `clips`, one per entry of `prompts` (the stage table's scoring)."""
    return score_clips(clips, prompts, [0], fps)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="+", help="folders holding vae/ (model directories)")
    p.add_argument("--prompts", default="configs/prompts/shapes_eval.txt")
    p.add_argument("--seeds", default="0,1,2,3")
    p.add_argument("--frames", type=int, default=21, help="1 + 4k video frames per clip")
    p.add_argument("--size", type=int, default=64, help="frame width and height (the shapes models' 64)")
    p.add_argument("--fps", type=int, default=16)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    prompts = read_prompts(args.prompts)
    seeds = [int(s) for s in args.seeds.split(",")]
    per_clip = [q for q in prompts for _ in seeds]  # ground_truth_clips' order: prompts outer, seeds inner
    rows = {}
    fps = args.fps
    clips = ground_truth_clips(prompts, seeds, args.frames, args.size, args.size, fps)
    rows["clips"] = {**ceiling(clips, per_clip, fps), "abs_error": 0.0}
    for d in args.dirs:
        vae = VideoVAE.from_pretrained(Path(d) / "vae").eval()
        with torch.no_grad():
            recon = reconstruct(vae, clips)
        error = float(np.mean([np.abs(r.astype(np.float32) - c.astype(np.float32)).mean() for r, c in zip(recon, clips)]))
        rows[d] = {**ceiling(recon, per_clip, fps), "abs_error": error}
    for name, row in rows.items():
        comps = " ".join(f"{c} {v:.3f}" for c, v in row["components"].items())
        words = " / ".join("-" if v is None else f"{v:.2f}" for v in row["shapes_by_kind"].values())
        print(f"{name}: overall {row['overall']:.3f} | {comps} | shapes {'/'.join(row['shapes_by_kind'])} {words} | "
              f"abs error {row['abs_error']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
