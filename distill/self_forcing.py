"""Stage `self-forcing`: Self-Forcing DMD (Huang et al. 2025, "Self Forcing: Bridging the
Train-Test Gap in Autoregressive Video Diffusion").

Roles: student (causal few-step generator, trained, EMA), teacher (frozen bidirectional, the real
score, with CFG), critic (bidirectional, initialised from the teacher, the fake score).

One step = `critic_steps` critic updates, then one student update:
- rollout: B streams through `StreamingGenerator.rollout_chunk` for `rollout_chunks` chunks, i.e.
  exactly the inference loop with its rolling KV cache (sink + window, evicting once the rollout
  is longer than the cache); every chunk stops at a random exit step (Self-Forcing Sec. 3.3),
  gradients only through the exit step's forward.
- the rollout is cut into windows of `score_frames` frames (the teacher's clip length) tiling it;
  noise level sigma ~ shift(U[min_sigma, max_sigma]) per window.
- student loss: DMD (distill/dmd.py, DMD eq. 7 with the eq. 8 normaliser) with
  real x0 = teacher under CFG `uncond + g (cond - uncond)`, fake x0 = critic.
- critic loss: flow matching on fresh detached rollouts (DMD2's fake-score update).

Randomness (distill/parallel.py): one generator, the same on every rank, draws each step's global
batch (prompts, stream seeds, DMD noise for world_size x batch_size streams); a rank keeps its own
slice. The exit steps are drawn from it too and broadcast from rank 0, so every rank runs the same
number of forward passes (FSDP2's collectives stay in step).
"""

from __future__ import annotations

import torch

from distill.config import SelfForcingStageConfig
from distill.dmd import cfg_flow, dmd_generator_loss, flow_matching_loss
from distill.parallel import broadcast_ints, global_batch, rank_slice
from distill.rollout import rollout, split_windows
from distill.trainer import Method, OptimSpec
from models.generator import StreamingGenerator
from models.schedule import FlowMatchSchedule, shift_sigma
from models.transformer import CausalWanTransformer


class SelfForcingDMD(Method):
    main_role = "student"

    def __init__(self, gen: StreamingGenerator, teacher: CausalWanTransformer, critic: CausalWanTransformer,
                 prompts: list[str], cfg: SelfForcingStageConfig, seed: int = 0, negative_prompt: str = ""):
        self.gen = gen
        self.student = gen.transformer
        self.teacher = teacher.eval().requires_grad_(False)
        self.critic = critic.train()
        self.schedule: FlowMatchSchedule = gen.schedule
        self.text = gen.text_encoder  # PromptCache
        self.prompts = prompts
        self.cfg = cfg
        self.device = gen.device
        self.rng = torch.Generator().manual_seed(seed)  # the same on every rank: draws the global batch
        self.negative_prompt = negative_prompt  # the unconditional branch of the real score's CFG
        self.last_ids: list[int] = []
        if cfg.batch_size > gen.info.max_batch:
            raise ValueError(f"batch_size {cfg.batch_size} > generator max_batch {gen.info.max_batch}")

    def roles(self):
        return {"student": self.student, "critic": self.critic, "teacher": self.teacher}

    def optim_specs(self):
        return {
            "student": OptimSpec(self.cfg.lr, self.cfg.betas, self.cfg.weight_decay),
            "critic": OptimSpec(self.cfg.critic_lr, self.cfg.betas, self.cfg.weight_decay),
        }

    def updates(self, step):
        return ["critic"] * self.cfg.critic_steps + ["student"]

    # ---- pieces
    def _rollout(self, grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(windows of the rollout [B*n, C, W, h, w], their text states [B*n, L, D])."""
        b = self.cfg.batch_size
        g = global_batch(b)
        idx = rank_slice(torch.randint(0, len(self.prompts), (g,), generator=self.rng).tolist(), b)
        prompts = [self.prompts[i] for i in idx]
        seeds = rank_slice(torch.randint(0, 2**31 - 1, (g,), generator=self.rng).tolist(), b)
        k = self.schedule.num_student_steps
        exits = broadcast_ints(torch.randint(0, k, (self.cfg.rollout_chunks,), generator=self.rng).tolist())
        self.last_ids = [*idx, *seeds]
        self.student.train(grad)
        x = rollout(self.gen, prompts, seeds, self.cfg.rollout_chunks, exit_steps=exits, grad=grad)  # [B, C, F, h, w]
        windows = split_windows(x.float(), self.cfg.score_frames)  # [B*n, C, W, h, w]
        n = windows.shape[0] // b
        text = self.text.get_batch(prompts)[0].to(self.device).float().repeat(n, 1, 1)  # [B*n, L, D]
        return windows, text

    def _noise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_t, sigma [B*n], eps) with sigma = shift(U[min_sigma, max_sigma]); x: this rank's windows
        [B*n, ...] (window-major), the noise drawn for the global batch's windows and sliced."""
        b = self.cfg.batch_size
        n = x.shape[0] // b
        rows = global_batch(b) * n
        u = self.cfg.min_sigma + (self.cfg.max_sigma - self.cfg.min_sigma) * torch.rand(rows, generator=self.rng)
        sigma = shift_sigma(rank_slice(u, b, groups=n), self.schedule.cfg.shift).to(self.device)
        eps = rank_slice(torch.randn((rows, *x.shape[1:]), generator=self.rng), b, groups=n).to(self.device)
        return self.schedule.add_noise(x, eps, sigma), sigma, eps

    @torch.no_grad()
    def real_x0(self, x_t: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Teacher x0 under CFG (one batched pass over cond and uncond)."""
        null = self.text.get(self.negative_prompt)[0].to(self.device).float().expand_as(text)
        t = self.schedule.timestep(sigma)
        out = self.teacher(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([text, null])).float()
        cond, uncond = out.chunk(2)
        return self.schedule.x0_from_flow(x_t, cfg_flow(cond, uncond, self.cfg.guidance), sigma)

    # ---- losses
    def loss(self, role, step):
        if role == "critic":
            return self.critic_loss()
        return self.student_loss()

    def critic_loss(self):
        """DMD2 fake-score update: flow matching on a detached student rollout."""
        with torch.no_grad():
            x, text = self._rollout(grad=False)
        x_t, sigma, eps = self._noise(x)
        pred = self.critic(x_t, self.schedule.timestep(sigma), text)
        loss = flow_matching_loss(pred, x, eps)
        return loss, {"critic_loss": loss.item()}

    def student_loss(self):
        """DMD generator loss (DMD eq. 7, normalised as eq. 8) on a rollout with gradient at the exit steps."""
        x, text = self._rollout(grad=True)
        x_t, sigma, _ = self._noise(x.detach())
        with torch.no_grad():
            real = self.real_x0(x_t, sigma, text)
            fake = self.schedule.x0_from_flow(x_t, self.critic(x_t, self.schedule.timestep(sigma), text).float(), sigma)
        loss = dmd_generator_loss(x, real, fake)
        return loss, {"dmd_loss": loss.item(), "real_gap": (x.detach() - real).abs().mean().item()}

    def state_dict(self):
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state):
        self.rng.set_state(state["rng"])

    def sample_ids(self):
        """(prompt indices, stream seeds) of the last rollout."""
        return self.last_ids
