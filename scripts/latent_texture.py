"""How much fine texture a shapes teacher's samples carry, per latent frame, against the clips' own latents.

    python scripts/latent_texture.py MODEL [--guidance 4] [--steps 32]

Texture is the mean |x - blur(x)| of a latent frame (blur: the 3x3 box mean, edges replicated), averaged over
channels and clips. Printed per latent frame position, for the teacher's samples of the 16 eval prompts (seeds 0-15,
6 latent frames, Euler at the schedule's teacher shift, CFG as given; frame 0 marked as its video's first when the
architecture has `video_start`) and for the ground-truth clips of the same prompts and seeds, encoded by MODEL's
VAE (`stage_quality.ground_truth_clips`). Latent frame 0
of a causal VAE's code is the first video frame alone, which the decoder reads as a still: texture there is what
decodes to a mottled first frame (docs/DISTILL.md, "A text stream's first frames").
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import numpy as np

from distill.eval_cli import read_prompts
from distill.ode_pairs import cfg_model_fn
from distill.stage_quality import ground_truth_clips
from distill.teacher_sampler import TeacherSampler
from models.vae import uint8_to_video

FRAMES = 6


def texture(latents: torch.Tensor) -> list[float]:
    """Mean |x - box3x3(x)| per latent frame of `latents [B, C, F, h, w]`."""
    b, c, f, h, w = latents.shape
    x = latents.float().permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (x - blur).abs().mean(dim=(1, 2, 3)).view(b, f).mean(0).tolist()


@torch.no_grad()
def latents(model: str, guidance: float | None, steps: int | None) -> dict[str, torch.Tensor]:
    """[16, C, 6, h, w] teacher samples of the eval prompts (seeds 0-15) and their ground-truth clips' latents."""
    sampler = TeacherSampler(model, device="cpu", steps=steps, guidance=guidance)
    prompts = read_prompts("configs/prompts/shapes_eval.txt")
    cfg = sampler.cfg
    s = cfg.stream
    clips = [ground_truth_clips([p], [seed], sampler.vae.num_video_frames(FRAMES), s.width, s.height, s.fps)[0]
             for seed, p in enumerate(prompts)]
    truth = sampler.vae.encode(uint8_to_video(np.stack(clips)).to(sampler.device))
    shape = (cfg.transformer.in_channels, FRAMES, cfg.latent_height, cfg.latent_width)
    noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(i)) for i in range(len(prompts))])
    text = sampler.text.get_batch(prompts)[0]
    null = sampler.text.get("")[0]
    sigmas = sampler.schedule.teacher_sigmas(sampler.steps)
    samples = sampler.schedule.sample(cfg_model_fn(sampler.teacher, text, null), noise, sigmas, guidance=sampler.guidance)
    return {"teacher samples": samples, "ground truth": truth}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="Euler steps (default: the model's teacher_steps)")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = {name: texture(x) for name, x in latents(args.model, args.guidance, args.steps).items()}
    print("texture per latent frame (mean |x - blur3x3(x)|)")
    for name, values in rows.items():
        print(f"  {name:16s} " + "  ".join(f"{v:.3f}" for v in values))


if __name__ == "__main__":
    main()
