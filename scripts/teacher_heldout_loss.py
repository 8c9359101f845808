"""Is a shapes teacher short of data or of capacity? `python scripts/teacher_heldout_loss.py TEACHER_DIR [--clips N]`

Encodes N clips the teacher trained on (the latent dataset's generator, `ShapesDataset(seed 1)`, indices 0..N-1;
a `teacher.num_clips` >= N run saw them all) and N it never saw (indices from 200,000) with TEACHER_DIR's VAE,
and prints the teacher's flow-matching loss (the teacher stage's objective, distill/teacher_stage.py) on both,
per training sigma, with the same noise for both sets. Held-out / training near 1: the teacher generalises and
more clips will not help; its loss level is then what capacity and steps buy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from distill.config import ShapesDataConfig
from distill.latents import build_latent_dataset
from models import load_generator
from models.schedule import FlowMatchSchedule
from models.transformer import CausalWanTransformer

SIGMAS = (0.1, 0.3, 0.5, 0.7, 0.9)
HELD_OUT_FROM = 200_000
LATENT_FRAMES = 7  # configs/shapes.yaml teacher.clip_latent_frames
CROP = 6  # teacher.train_frames; crops start at latent frame 1 (mid-video, as most of its crops are)


@torch.no_grad()
def flow_loss(teacher, schedule, latents, text, eps, sigma: float, batch: int = 16) -> float:
    """Mean || v(x_t, t, c) - (eps - x0) ||^2 over the clips' [1, 1 + CROP) crops at one sigma."""
    x0 = latents[:, :, 1:1 + CROP]
    total = 0.0
    for s in range(0, len(x0), batch):
        sg = torch.full((len(x0[s:s + batch]),), sigma)
        x_t = schedule.add_noise(x0[s:s + batch], eps[s:s + batch], sg)
        pred = teacher(x_t, schedule.timestep(sg), text[s:s + batch])
        total += ((pred.float() - schedule.flow_target(x0[s:s + batch], eps[s:s + batch])) ** 2).mean().item() * len(sg)
    return total / len(x0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("teacher", type=Path, help="model directory with teacher/ and vae/")
    p.add_argument("--clips", type=int, default=256, help="clips per set (default: 256)")
    args = p.parse_args()
    torch.set_num_threads(1)
    gen = load_generator(str(args.teacher), device="cpu", max_batch=1)
    vae = gen.vae.float().eval()
    teacher = CausalWanTransformer.from_pretrained(args.teacher / "teacher").float().eval()
    schedule = FlowMatchSchedule(gen.cfg.schedule)
    def encode(first: int) -> tuple[torch.Tensor, torch.Tensor]:  # (latents [N, C, 7, h, w], text [N, L, D])
        data = build_latent_dataset(vae, gen.text_encoder, ShapesDataConfig(max_objects=3), args.clips, LATENT_FRAMES,
                                    seed=1, progress=False, first=first)
        return data["latents"], data["text"].float()

    sets = {"training": encode(0), "held-out": encode(HELD_OUT_FROM)}
    shape = sets["training"][0][:, :, 1:1 + CROP].shape
    eps = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    means = {name: 0.0 for name in sets}
    print(f"{'sigma':>6} {'training':>9} {'held-out':>9} {'ratio':>6}")
    for sigma in SIGMAS:
        row = {name: flow_loss(teacher, schedule, lat, text, eps, sigma) for name, (lat, text) in sets.items()}
        for name in sets:
            means[name] += row[name] / len(SIGMAS)
        print(f"{sigma:>6.1f} {row['training']:>9.4f} {row['held-out']:>9.4f} {row['held-out'] / row['training']:>6.3f}")
    print(f"{'mean':>6} {means['training']:>9.4f} {means['held-out']:>9.4f} {means['held-out'] / means['training']:>6.3f}")


if __name__ == "__main__":
    main()
