"""Stage `teacher`: the bidirectional DiT trained by flow matching on VAE latents (shapes family).

Rectified-flow / flow-matching objective (Lipman et al. 2023; Esser et al. 2024 for the shifted
timestep sampling Wan uses): x_t = (1 - sigma) x0 + sigma eps, loss = || v_theta(x_t, t, c) - (eps - x0) ||^2,
sigma = shift(u), u ~ U(0, 1), with `teacher.shift` (default: the schedule's). The prompt c is replaced
by the empty prompt with probability `text_dropout`, so the same network gives the unconditional flow
for classifier-free guidance. Training clips are random crops of `train_frames` latent frames from the
encoded videos (so the teacher judges windows that start mid-video too, as Self-Forcing's scoring windows do).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.config import TeacherStageConfig
from distill.trainer import Method, OptimSpec
from models.schedule import FlowMatchSchedule, shift_sigma
from models.transformer import CausalWanTransformer


class FlowMatchMethod(Method):
    main_role = "teacher"

    def __init__(self, model: CausalWanTransformer, schedule: FlowMatchSchedule, data: dict, null_text: torch.Tensor,
                 cfg: TeacherStageConfig, seed: int = 0, device: torch.device | str = "cpu"):
        self.model = model.train()
        self.schedule = schedule
        self.latents = data["latents"]  # [N, C, Fv, h, w]
        self.text = data["text"]  # [N, L, D]
        self.null_text = null_text.reshape(1, *self.text.shape[1:]).to(self.text.dtype)  # [1, L, D]
        self.cfg = cfg
        self.device = torch.device(device)
        self.gen = torch.Generator().manual_seed(seed)
        if cfg.train_frames > self.latents.shape[2]:
            raise ValueError(f"train_frames {cfg.train_frames} > encoded latent frames {self.latents.shape[2]}")

    def roles(self):
        return {"teacher": self.model}

    def optim_specs(self):
        return {"teacher": OptimSpec(self.cfg.lr, self.cfg.betas, self.cfg.weight_decay)}

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0 [B, C, Ft, h, w], text [B, L, D]) with random crops and text dropout."""
        b, ft = self.cfg.batch_size, self.cfg.train_frames
        idx = torch.randint(0, self.latents.shape[0], (b,), generator=self.gen)
        start = torch.randint(0, self.latents.shape[2] - ft + 1, (b,), generator=self.gen)
        x0 = torch.stack([self.latents[i, :, s:s + ft] for i, s in zip(idx.tolist(), start.tolist())])
        drop = torch.rand(b, generator=self.gen) < self.cfg.text_dropout
        text = torch.where(drop[:, None, None], self.null_text, self.text[idx])
        return x0.to(self.device), text.float().to(self.device)

    def train_sigma(self, b: int) -> torch.Tensor:
        """[B] training sigmas shift(u), u ~ U(0, 1): `teacher.shift`, or the schedule's when it is 0."""
        return shift_sigma(torch.rand(b, generator=self.gen), self.cfg.shift or self.schedule.cfg.shift)

    def loss(self, role, step):
        """Flow-matching MSE between the predicted and the true flow eps - x0 (module docstring)."""
        x0, text = self.batch()
        b = x0.shape[0]
        sigma = self.train_sigma(b).to(self.device)  # [B]
        eps = torch.randn(x0.shape, generator=self.gen).to(self.device)
        x_t = self.schedule.add_noise(x0, eps, sigma)
        pred = self.model(x_t, self.schedule.timestep(sigma), text)
        loss = F.mse_loss(pred.float(), self.schedule.flow_target(x0, eps))
        return loss, {"loss": loss.item()}

    def state_dict(self):
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state):
        self.gen.set_state(state["gen"])
