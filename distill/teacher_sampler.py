"""The teacher as a video sampler: the bidirectional DiT integrated over a whole clip with many
steps and classifier-free guidance, then decoded. `framecast eval --teacher` scores it on the same
prompts and seeds as the student, so the student's quality is measured against its teacher.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from distill.ode_pairs import cfg_model_fn
from models.schedule import FlowMatchSchedule
from models.vae import frames_to_uint8


class TeacherSampler:
    """Samples clips `[T, H, W, 3]` uint8 from a model directory's `teacher/` transformer.

    steps / guidance / solver default to the model's schedule (`teacher_steps`, `guidance_scale`)
    and Euler; the noise of a clip is drawn from `torch.Generator().manual_seed(seed)`.
    """

    def __init__(self, model: str, device: str | torch.device | None = None, steps: int | None = None,
                 guidance: float | None = None, solver: str = "euler"):
        from models.generator import default_device
        from models.model_dir import load_transformer, load_vae, resolve_model
        from models.text_encoders import build_text_encoder

        self.device = torch.device(device) if device is not None else default_device()
        source = resolve_model(model)
        self.cfg = source.config
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.teacher = load_transformer(source, "teacher", device=self.device, dtype=self.dtype).eval()
        self.vae = load_vae(source, device=self.device).eval()
        self.text = build_text_encoder(self.cfg.text_encoder, source.path, self.device)
        self.schedule = FlowMatchSchedule(self.cfg.schedule)
        self.steps = steps or self.cfg.schedule.teacher_steps
        self.guidance = self.cfg.schedule.guidance_scale if guidance is None else guidance
        self.solver = solver
        self.fps = self.cfg.stream.fps

    def latent_frames(self, frames: int) -> int:
        """Latent frames whose decode covers `frames` video frames (1 + tc * (F - 1) >= frames)."""
        tc = self.vae.temporal_compression
        return 1 + max(0, math.ceil((frames - 1) / tc))

    @torch.no_grad()
    def sample(self, prompts: list[str], seeds: list[int], frames: int) -> list[np.ndarray]:
        """One clip per (prompt, seed), sampled together: list of `[frames, H, W, 3]` uint8."""
        c = self.cfg.transformer.in_channels
        sc = self.vae.spatial_compression
        f = self.latent_frames(frames)
        shape = (c, f, self.cfg.stream.height // sc, self.cfg.stream.width // sc)
        noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])  # [B, C, F, h, w]
        text = self.text.get_batch(prompts)[0].to(self.device, self.dtype)  # [B, L, D]
        null = self.text.get("")[0].to(self.device, self.dtype)  # [1, L, D]
        model_fn = cfg_model_fn(self.teacher, text, null)
        latents = self.schedule.sample(
            lambda x, t: model_fn(x.to(self.dtype), t),
            noise.to(self.device), self.schedule.teacher_sigmas(self.steps), guidance=self.guidance, solver=self.solver,
        )  # [B, C, F, h, w]
        video = frames_to_uint8(self.vae.decode(latents.float()))  # [B, T, H, W, 3]
        return [clip[:frames] for clip in video]
