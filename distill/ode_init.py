"""Stage `ode-init`: the causal student, initialised from the teacher, regressed on ODE pairs.

CausVid (Yin et al. 2025, "From Slow Bidirectional to Fast Autoregressive Video Diffusion
Models", Sec. 3.2 / eq. 4, student initialisation): for a teacher trajectory {x_{sigma_k}} ending in
x0, each chunk of the clip independently takes one of the student's sigmas k_j, the student runs
block-causally (`forward(..., chunk_frames=c)`: a chunk sees itself and the chunks before it) on
the mixed-noise clip, and its x0 prediction x - sigma * flow is regressed onto the teacher's x0:
    L = || G_theta({x_{sigma_{k_j}}}_j, {sigma_{k_j}}_j) - x0 ||^2.
Image-led pairs (`ODEPairStore.lead`: frame 0 a start image held clean along the teacher's ODE) keep that
frame clean at sigma 0 as a chunk of its own (`lead_frames=1`, the way a stream commits its start image),
count their chunks after it, and leave it out of the loss.
"""

from __future__ import annotations

import torch

from distill.config import ODEInitStageConfig
from distill.dmd import masked_mean
from distill.ode_pairs import ODEPairStore
from distill.parallel import global_batch, rank_slice
from distill.trainer import Method, OptimSpec
from models.schedule import FlowMatchSchedule
from models.transformer import CausalWanTransformer


def frame_levels(level: torch.Tensor, chunk: int, frames: int, lead: torch.Tensor | None = None) -> torch.Tensor:
    """Per-frame noise-level indices [B, frames] from per-chunk ones level [B, n] (n chunks of `chunk`
    frames); rows where `lead` [B] (bool) is set start with frame 0 at level 0 (the caller keeps it clean)
    and count their chunks from frame 1."""
    per_frame = level.repeat_interleave(chunk, 1)
    if lead is None or not lead.any():
        return per_frame[:, :frames]
    led = torch.cat([torch.zeros_like(level[:, :1]), per_frame[:, :frames - 1]], 1)
    return led if lead.all() else torch.where(lead[:, None], led, per_frame[:, :frames])


class ODERegressionMethod(Method):
    main_role = "student"

    def __init__(self, student: CausalWanTransformer, schedule: FlowMatchSchedule, pairs: ODEPairStore, chunk_frames: int,
                 cfg: ODEInitStageConfig, seed: int = 0, device: torch.device | str = "cpu"):
        self.student = student.train()
        self.schedule = schedule
        self.pairs = pairs  # read lazily: only each micro-batch's pairs are loaded
        self.chunk = chunk_frames
        self.cfg = cfg
        self.device = torch.device(device)
        self.gen = torch.Generator().manual_seed(seed)  # the same on every rank: draws the global batch
        self.last_ids: list[int] = []
        k = pairs.state_shape[0]
        if k != schedule.num_student_steps:
            raise ValueError(f"ODE pairs keep {k} sigmas but the student has {schedule.num_student_steps} steps")

    def roles(self):
        return {"student": self.student}

    def optim_specs(self):
        return {"student": OptimSpec(self.cfg.lr, self.cfg.betas, self.cfg.weight_decay)}

    def batch(self):
        """(x_in [B, C, F, h, w] with per-chunk noise levels, sigma [B, F], x0 [B, C, F, h, w], text, lead [B]).

        Every rank draws the global batch (world_size x batch_size pair indices and noise levels)
        from the shared generator and keeps its own slice (distill/parallel.py). Image-led rows (lead)
        have frame 0 clean: the start image, at sigma 0."""
        n, (k, _, f) = len(self.pairs), self.pairs.state_shape[:3]
        b = self.cfg.batch_size
        g = global_batch(b)
        idx = rank_slice(torch.randint(0, n, (g,), generator=self.gen), b)
        n_chunks = -(-f // self.chunk)
        level = torch.randint(0, k, (g, n_chunks), generator=self.gen)
        self.last_ids = idx.tolist()
        lead = self.pairs.lead[idx]  # [B]
        level = frame_levels(rank_slice(level, b), self.chunk, f, lead)  # [B, F]
        pairs = self.pairs.get(self.last_ids)
        states = pairs["states"]  # [B, K, C, F, h, w]
        gather = level[:, None, None, :, None, None].expand(b, 1, *states.shape[2:])
        x_in = states.gather(1, gather).squeeze(1)  # [B, C, F, h, w]
        sigma = self.schedule.student_sigmas()[level]  # [B, F]
        sigma[lead, 0] = 0.0  # the start image, clean (the pairs hold it at every kept sigma)
        return (x_in.to(self.device), sigma.to(self.device), pairs["x0"].to(self.device), pairs["text"].to(self.device),
                lead.to(self.device))

    def loss(self, role, step):
        """CausVid ODE regression (eq. 4): MSE of the block-causal x0 prediction to the teacher's x0, over
        every frame but the start image of image-led rows (which run with it as a lead chunk of their own)."""
        x_in, sigma, x0, text, lead = self.batch()
        t = self.schedule.timestep(sigma)
        pred = torch.empty_like(x0)
        for led in (False, True):
            rows = lead == led
            if rows.any():
                flow = self.student(x_in[rows], t[rows], text[rows], chunk_frames=self.chunk, lead_frames=int(led),
                                    video_start=True)  # every pair is a stream from its first latent frame
                pred[rows] = self.schedule.x0_from_flow(x_in[rows], flow.float(), sigma[rows])
        weight = torch.ones_like(sigma)  # [B, F]
        weight[lead, 0] = 0.0
        loss = masked_mean((pred - x0) ** 2, weight[:, None, :, None, None])
        return loss, {"loss": loss.item()}

    def state_dict(self):
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state):
        self.gen.set_state(state["gen"])

    def sample_ids(self):
        return self.last_ids
