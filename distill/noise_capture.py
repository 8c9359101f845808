"""How much of the noise a flow model gives back: the check that finds an output head too narrow.

A flow-matching model predicts v = eps - x0 from x_t = (1 - sigma) x0 + sigma eps (teacher_stage.py).
The x0 part is smooth and predictable from context; the eps part is white noise that the model can only
return by carrying each latent pixel's noise from its input to its output. A DiT token carries a patch of
`in_channels x patch` numbers in a residual stream `dim` wide: when `dim` is smaller than the patch (the
width-128 avatar DiT over 4 x 4 x 16 = 256 numbers per token) the noise cannot get through, the model
returns only part of it, and every sampling step leaves the rest in the sample: mottled frames.

`noise_capture` measures it on clean clips: noise them at a sigma, ask the model for v, and fit
v ~ a eps + b x0 by least squares over the noised elements. A model that knows x0 returns all the noise
(a = 1, b = -1, no residual); a = 0.45 means it hands back 45 % of the noise it was given. Where x0 is
uncertain the best possible a is lower, and more so at low sigma: for unit-variance Gaussian data, about
which x_t says nothing else, it is s^2 / (s^2 + (1 - s)^2) (0.01 at sigma 0.1, 0.5 at 0.5, 0.99 at 0.9).
So at sigma 0.9 every sound model is near 1, and a lower figure there is the model's own limit.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

SIGMAS: tuple[float, ...] = (0.1, 0.5, 0.9)


@torch.no_grad()
def noise_capture(flow: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], schedule, x0: torch.Tensor,
                  sigmas=SIGMAS, lead_frames: int = 0, seed: int = 0) -> list[dict]:
    """Per sigma: {"sigma", "a" (the share of the noise the model returns), "b" (its x0 coefficient, -1 when
    exact), "residual_rms" (what neither explains)}.

    flow(x_t [B, C, F, h, w], t [B, F]) -> v [B, C, F, h, w]; x0 [B, C, F, h, w] clean latents whose first
    `lead_frames` frames stay clean (timestep 0) and are left out of the fit, as an image-led clip's are."""
    gen = torch.Generator().manual_seed(seed)
    b, f = x0.shape[0], x0.shape[2]
    rows = []
    for s in sigmas:
        eps = torch.randn(x0.shape, generator=gen).to(x0)
        sigma = torch.full((b, f), float(s), device=x0.device)
        sigma[:, :lead_frames] = 0.0
        v = flow(schedule.add_noise(x0, eps, sigma), schedule.timestep(sigma)).float()
        e, x, y = (t[:, :, lead_frames:].flatten().double() for t in (eps, x0, v))
        design = torch.stack([e, x], dim=1)  # [N, 2]
        coef = torch.linalg.lstsq(design, y[:, None]).solution.flatten()
        residual = y - design @ coef
        rows.append({"sigma": float(s), "a": float(coef[0]), "b": float(coef[1]),
                     "residual_rms": float(residual.pow(2).mean().sqrt())})
    return rows


def noise_capture_line(rows: list[dict]) -> str:
    """The console line of a teacher's `noise_capture` rows."""
    shares = ", ".join(f"{row['a']:.2f} at sigma {row['sigma']:g}" for row in rows)
    return f"teacher noise capture (share of the noise its flow returns; 1 = all of it): {shares}"


@torch.no_grad()
def shapes_noise_capture(sampler, prompts: list[str], seeds: list[int]) -> list[dict]:
    """`noise_capture` of a shapes teacher's conditional flow (`TeacherSampler`) on the ground-truth clips of
    `prompts` x `seeds`, encoded at the teacher's training clip length (`teacher.train_frames` latent frames)."""
    from distill.config import TeacherStageConfig
    from distill.stage_quality import ground_truth_clips
    from models.vae import uint8_to_video

    cfg = sampler.cfg.stream
    frames = sampler.vae.num_video_frames(TeacherStageConfig.train_frames)
    clips = ground_truth_clips(prompts, seeds, frames, cfg.width, cfg.height, cfg.fps)
    x0 = sampler.vae.encode(uint8_to_video(np.stack(clips)).to(sampler.device)).float()  # [B, C, F, h, w]
    text = sampler.text.get_batch([p for p in prompts for _ in seeds])[0].to(sampler.device, sampler.dtype)

    def flow(x_t, t):
        return sampler.teacher(x_t.to(sampler.dtype), t, text, video_start=True)  # clips from their first frame

    return noise_capture(flow, sampler.schedule, x0)
