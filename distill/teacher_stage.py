"""Stage `teacher`: the bidirectional DiT trained by flow matching on VAE latents (shapes family).

Rectified-flow / flow-matching objective (Lipman et al. 2023; Esser et al. 2024 for the shifted
timestep sampling Wan uses): x_t = (1 - sigma) x0 + sigma eps, loss = || v_theta(x_t, t, c) - (eps - x0) ||^2,
sigma = shift(u), u ~ U(0, 1), with `teacher.shift` (default: the schedule's). The prompt c is replaced
by the empty prompt with probability `text_dropout`, so the same network gives the unconditional flow
for classifier-free guidance. Training clips are random crops of `train_frames` latent frames from the
encoded videos (so the teacher judges windows that start mid-video too, as Self-Forcing's scoring windows do).

Image-led clips (`teacher.image_lead_share`): that share of the crops is [the video's latent frame 0 | frames
from anywhere after it, or with `teacher.image_lead_adjacent` the frames right after it], frame 0 kept clean
(sigma 0, no loss on it). Latent frame 0 of a causal VAE is the
code of the video's first frame alone, i.e. what `stream(image=...)` commits for a start image, so the teacher
learns to follow a clean start image (as the avatar teacher follows its face) and Self-Forcing can judge
image-started windows led by that image (`self_forcing.image_lead`).

Object weighting (`teacher.object_weight` w): the squared error of each latent pixel an object touches
(`objects`, distill/latents.latent_object_masks) weighs 1 + w, and the loss is the weighted mean
sum(w e^2) / sum(w). The objects cover a few percent of a shapes latent; unweighted, most of the loss is the
background's noise. With `teacher.object_weight_min_sigma` s, only samples at sigma >= s are weighted (where the
objects' layout and colours are decided; the low sigmas, which render texture, keep the plain mean).
"""

from __future__ import annotations

import torch

from distill.config import TeacherStageConfig
from distill.dmd import masked_mean
from distill.trainer import Method, OptimSpec
from models.schedule import FlowMatchSchedule, shift_sigma
from models.transformer import CausalWanTransformer


def image_led_crops(latents: torch.Tensor, lead: torch.Tensor, gen: torch.Generator, b: int, frames: int,
                    adjacent: bool = False, objects: torch.Tensor | None = None):
    """b clips [lead image | frames - 1 contiguous latent frames from anywhere after frame 0, or with `adjacent`
    the frames right after it]: (x0 [b, C, frames, h, w], clip indices, start frames, their object masks
    [b, 1, frames, h, w] or None). latents [N, C, F, h, w]; lead [N, C, 1, h, w]; objects [N, 1, F, h, w] or None."""
    n, f = latents.shape[0], latents.shape[2]
    if frames > f:
        raise ValueError(f"{frames} frames asked of clips of {f} latent frames")
    idx = torch.randint(0, n, (b,), generator=gen).tolist()
    last_start = 1 if adjacent else f - frames + 1
    start = torch.randint(1, last_start + 1, (b,), generator=gen).tolist()
    x0 = torch.stack([torch.cat([lead[i], latents[i, :, s:s + frames - 1]], dim=1) for i, s in zip(idx, start)])
    masks = None
    if objects is not None:
        masks = torch.stack([torch.cat([objects[i, :, :1], objects[i, :, s:s + frames - 1]], dim=1)
                             for i, s in zip(idx, start)])
    return x0, idx, start, masks


class FlowMatchMethod(Method):
    main_role = "teacher"

    def __init__(self, model: CausalWanTransformer, schedule: FlowMatchSchedule, data: dict, null_text: torch.Tensor,
                 cfg: TeacherStageConfig, seed: int = 0, device: torch.device | str = "cpu",
                 objects: torch.Tensor | None = None):
        self.model = model.train()
        self.schedule = schedule
        self.latents = data["latents"]  # [N, C, Fv, h, w]
        self.text = data["text"]  # [N, L, D]
        self.objects = objects  # [N, 1, F, h, w] bool or None
        if objects is not None and objects.shape[:1] + objects.shape[2:] != self.latents.shape[:1] + self.latents.shape[2:]:
            raise ValueError(f"object masks {list(objects.shape)} do not match the latents {list(self.latents.shape)}")
        if cfg.object_weight > 0 and objects is None:
            raise ValueError("teacher.object_weight needs the clips' object masks")
        self.null_text = null_text.reshape(1, *self.text.shape[1:]).to(self.text.dtype)  # [1, L, D]
        self.cfg = cfg
        self.device = torch.device(device)
        self.gen = torch.Generator().manual_seed(seed)
        if cfg.train_frames > self.latents.shape[2]:
            raise ValueError(f"train_frames {cfg.train_frames} > encoded latent frames {self.latents.shape[2]}")
        if not 0 <= cfg.image_lead_share <= 1:
            raise ValueError(f"teacher.image_lead_share {cfg.image_lead_share} is not in [0, 1]")

    def roles(self):
        return {"teacher": self.model}

    def optim_specs(self):
        return {"teacher": OptimSpec(self.cfg.lr, self.cfg.betas, self.cfg.weight_decay)}

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(x0 [B, C, Ft, h, w], text [B, L, D], led [B] bool, object masks [B, 1, Ft, h, w] or None, first [B] bool)
        with random crops and text dropout; the rows where `led` is set are image-led crops (`image_led_crops`, share
        `teacher.image_lead_share`); `first` marks the crops whose frame 0 is their video's first latent frame."""
        b, ft = self.cfg.batch_size, self.cfg.train_frames
        idx = torch.randint(0, self.latents.shape[0], (b,), generator=self.gen)
        start = torch.randint(0, self.latents.shape[2] - ft + 1, (b,), generator=self.gen)
        x0 = torch.stack([self.latents[i, :, s:s + ft] for i, s in zip(idx.tolist(), start.tolist())])
        masks = None
        if self.objects is not None:
            masks = torch.stack([self.objects[i, :, s:s + ft] for i, s in zip(idx.tolist(), start.tolist())])
        led = torch.zeros(b, dtype=torch.bool)
        first = start == 0  # [B] crops from the video's first latent frame (the VAE's start code)
        if self.cfg.image_lead_share > 0:
            led = torch.rand(b, generator=self.gen) < self.cfg.image_lead_share
            if led.any():
                led_x0, led_idx, _, led_masks = image_led_crops(self.latents, self.latents[:, :, :1], self.gen,
                                                                int(led.sum()), ft, adjacent=self.cfg.image_lead_adjacent,
                                                                objects=self.objects)
                x0[led] = led_x0.to(x0.dtype)
                if masks is not None:
                    masks[led] = led_masks
                idx[led] = torch.tensor(led_idx)
                first[led] = True  # led by frame 0
        drop = torch.rand(b, generator=self.gen) < self.cfg.text_dropout
        text = torch.where(drop[:, None, None], self.null_text, self.text[idx])
        masks = None if masks is None else masks.to(self.device)
        return x0.to(self.device), text.float().to(self.device), led.to(self.device), masks, first.to(self.device)

    def train_sigma(self, b: int) -> torch.Tensor:
        """[B] training sigmas shift(u), u ~ U(0, 1): `teacher.shift`, or the schedule's when it is 0."""
        return shift_sigma(torch.rand(b, generator=self.gen), self.cfg.shift or self.schedule.cfg.shift)

    def loss(self, role, step):
        """Flow-matching MSE between the predicted and the true flow eps - x0 (module docstring); on image-led
        rows frame 0 is clean (sigma 0) and out of the mean; with `object_weight`, the weighted mean (module docstring)."""
        x0, text, led, masks, first = self.batch()
        b, f = x0.shape[0], x0.shape[2]
        sigma = self.train_sigma(b).to(self.device)  # [B]
        eps = torch.randn(x0.shape, generator=self.gen).to(self.device)
        scored = None  # [B, 1, F, 1, 1] with image-led rows: 0 on their clean image, which the mean leaves out
        if led.any():
            sigma = sigma[:, None].expand(b, f).clone()  # [B, F]
            sigma[led, 0] = 0.0
            scored = torch.ones(b, 1, f, 1, 1, device=self.device)
            scored[led, :, 0] = 0.0
        x_t = self.schedule.add_noise(x0, eps, sigma)
        pred = self.model(x_t, self.schedule.timestep(sigma), text, video_start=first)
        if self.cfg.object_weight > 0:  # [B, 1, F, h, w] weights 1 + w on object pixels, 0 on clean image frames
            high = (sigma >= self.cfg.object_weight_min_sigma).float()  # [B] or [B, F]
            high = high.view(b, 1, -1, 1, 1)  # [B, 1, 1 or F, 1, 1]
            if not self.cfg.object_weight_led:
                high = high * (~led).float().view(b, 1, 1, 1, 1)  # led rows: the plain MSE
            weights = 1.0 + self.cfg.object_weight * masks.float() * high
            scored = weights if scored is None else weights * scored
        loss = masked_mean((pred.float() - self.schedule.flow_target(x0, eps)) ** 2, scored)
        logs = {"loss": loss.item()}
        if self.cfg.image_lead_share > 0:
            logs["image_led"] = led.float().mean().item()
        return loss, logs

    def state_dict(self):
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state):
        self.gen.set_state(state["gen"])
