"""Stage `ode-init`: the causal student, initialised from the teacher, regressed on ODE pairs.

CausVid (Yin et al. 2025, "From Slow Bidirectional to Fast Autoregressive Video Diffusion
Models", Sec. 3.2 / eq. 4, student initialisation): for a teacher trajectory {x_{sigma_k}} ending in
x0, each chunk of the clip independently takes one of the student's sigmas k_j, the student runs
block-causally (`forward(..., chunk_frames=c)`: a chunk sees itself and the chunks before it) on
the mixed-noise clip, and its x0 prediction x - sigma * flow is regressed onto the teacher's x0:
    L = || G_theta({x_{sigma_{k_j}}}_j, {sigma_{k_j}}_j) - x0 ||^2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.config import ODEInitStageConfig
from distill.ode_pairs import ODEPairStore
from distill.parallel import global_batch, rank_slice
from distill.trainer import Method, OptimSpec
from models.schedule import FlowMatchSchedule
from models.transformer import CausalWanTransformer


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
        """(x_in [B, C, F, h, w] with per-chunk noise levels, sigma [B, F], x0 [B, C, F, h, w], text).

        Every rank draws the global batch (world_size x batch_size pair indices and noise levels)
        from the shared generator and keeps its own slice (distill/parallel.py)."""
        n, (k, _, f) = len(self.pairs), self.pairs.state_shape[:3]
        b = self.cfg.batch_size
        g = global_batch(b)
        idx = rank_slice(torch.randint(0, n, (g,), generator=self.gen), b)
        n_chunks = -(-f // self.chunk)
        level = torch.randint(0, k, (g, n_chunks), generator=self.gen)
        level = rank_slice(level, b).repeat_interleave(self.chunk, 1)[:, :f]  # [B, F]
        self.last_ids = idx.tolist()
        pairs = self.pairs.get(self.last_ids)
        states = pairs["states"]  # [B, K, C, F, h, w]
        gather = level[:, None, None, :, None, None].expand(b, 1, *states.shape[2:])
        x_in = states.gather(1, gather).squeeze(1)  # [B, C, F, h, w]
        sigma = self.schedule.student_sigmas()[level]  # [B, F]
        return (x_in.to(self.device), sigma.to(self.device), pairs["x0"].to(self.device), pairs["text"].to(self.device))

    def loss(self, role, step):
        """CausVid ODE regression (eq. 4): MSE of the block-causal x0 prediction to the teacher's x0."""
        x_in, sigma, x0, text = self.batch()
        flow = self.student(x_in, self.schedule.timestep(sigma), text, chunk_frames=self.chunk)
        pred = self.schedule.x0_from_flow(x_in, flow.float(), sigma)
        loss = F.mse_loss(pred, x0)
        return loss, {"loss": loss.item()}

    def state_dict(self):
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state):
        self.gen.set_state(state["gen"])

    def sample_ids(self):
        return self.last_ids
