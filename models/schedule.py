"""Flow-matching noise schedule: stateless, so one object serves any number of streams.

Convention (Wan2.1 / rectified flow):
    sigma in [0, 1], timestep t = sigma * num_train_timesteps
    x_t  = (1 - sigma) * x0 + sigma * eps
    flow = eps - x0                      (what the model predicts)
so dx_t/dsigma = flow, and an ODE step from sigma to sigma_next is x + (sigma_next - sigma) * flow.

Sigmas may be a Python float, a 0-d tensor, a per-sample tensor `[B]` or a per-frame tensor
`[B, F]`; they broadcast onto latent videos `[B, C, F, H, W]`. No method keeps a step index.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from models.config import ScheduleConfig

# model_fn(x_t [B, C, F, H, W], t [B] or [B, F]) -> flow, or (flow_cond, flow_uncond) for CFG
ModelFn = Callable[[torch.Tensor, torch.Tensor], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]

SOLVERS = ("euler", "heun")


def shift_sigma(sigma: torch.Tensor | float, shift: float) -> torch.Tensor | float:
    """Timestep shift: sigma' = shift * s / (1 + (shift - 1) * s); keeps 0 -> 0 and 1 -> 1."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def broadcast_sigma(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor | float:
    """Shape `sigma` so it multiplies a latent video x `[B, C, F, H, W]`.

    float / 0-d -> unchanged; `[B]` -> `[B, 1, 1, 1, 1]`; `[B, F]` -> `[B, 1, F, 1, 1]`.
    """
    if not isinstance(sigma, torch.Tensor) or sigma.ndim == 0:
        return sigma
    if x.ndim != 5:
        raise ValueError(f"expected a latent video [B, C, F, H, W], got shape {tuple(x.shape)}")
    b, _, f = x.shape[:3]
    if sigma.ndim == 1:
        if sigma.shape[0] != b:
            raise ValueError(f"sigma [B] has {sigma.shape[0]} entries for batch {b}")
        return sigma.to(x.device, x.dtype).view(b, 1, 1, 1, 1)
    if sigma.ndim == 2:
        if tuple(sigma.shape) != (b, f):
            raise ValueError(f"per-frame sigma must be [B, F] = {(b, f)}, got {tuple(sigma.shape)}")
        return sigma.to(x.device, x.dtype).view(b, 1, f, 1, 1)
    raise ValueError(f"sigma must be a scalar, [B] or [B, F]; got shape {tuple(sigma.shape)}")


def nearest_grid_indices(grid: torch.Tensor, targets: Sequence[float] | torch.Tensor) -> list[int]:
    """For each target sigma, the index of the nearest sigma in `grid` `[N]`."""
    targets = torch.as_tensor(targets, dtype=torch.float64).flatten()
    dist = (grid.to(torch.float64).view(1, -1) - targets.view(-1, 1)).abs()  # [K, N]
    return dist.argmin(dim=1).tolist()


class FlowMatchSchedule:
    """Pure functions of (x, flow, sigma) plus the student's and the teacher's sigma grids."""

    def __init__(self, cfg: ScheduleConfig):
        if not cfg.student_timesteps:
            raise ValueError("student_timesteps must list at least one timestep")
        self.cfg = cfg
        self.num_train_timesteps = cfg.num_train_timesteps
        # the student's sigmas as Python floats (device-free); index k = denoising step k
        self._student = tuple(
            float(shift_sigma(t / cfg.num_train_timesteps, cfg.shift)) for t in cfg.student_timesteps
        )

    # ---- grids ----
    @property
    def num_student_steps(self) -> int:
        return len(self._student)

    def student_sigmas(self) -> torch.Tensor:
        """The student's sigmas `[K]`: cfg.student_timesteps / num_train_timesteps, shifted by cfg.shift."""
        return torch.tensor(self._student, dtype=torch.float32)

    def student_timesteps(self) -> torch.Tensor:
        """The student's model timesteps `[K]` (shifted sigmas * num_train_timesteps)."""
        return self.student_sigmas() * self.num_train_timesteps

    def teacher_sigmas(self, steps: int | None = None, shift: float | None = None) -> torch.Tensor:
        """`[steps + 1]` sigmas from 1 down to 0: linspace(1, 0) warped by `shift` (cfg defaults)."""
        steps = self.cfg.teacher_steps if steps is None else steps
        shift = self.cfg.teacher_shift if shift is None else shift
        if steps < 1:
            raise ValueError(f"teacher steps must be >= 1, got {steps}")
        base = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        return shift_sigma(base, shift).to(torch.float32)

    def timestep(self, sigma: torch.Tensor | float) -> torch.Tensor | float:
        """Model timestep for a sigma: t = sigma * num_train_timesteps."""
        return sigma * self.num_train_timesteps

    # ---- the flow-matching algebra ----
    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """x_t = (1 - sigma) * x0 + sigma * eps; x0, eps `[B, C, F, H, W]`, sigma scalar/[B]/[B, F]."""
        s = broadcast_sigma(sigma, x0)
        return (1 - s) * x0 + s * eps

    @staticmethod
    def flow_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The regression target of flow matching: eps - x0."""
        return eps - x0

    def x0_from_flow(self, x_t: torch.Tensor, flow: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """Clean sample implied by a flow prediction: x0 = x_t - sigma * flow."""
        return x_t - broadcast_sigma(sigma, x_t) * flow

    def eps_from_flow(self, x_t: torch.Tensor, flow: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """Noise implied by a flow prediction: eps = x_t + (1 - sigma) * flow."""
        return x_t + (1 - broadcast_sigma(sigma, x_t)) * flow

    def step_to(
        self, x_t: torch.Tensor, flow: torch.Tensor, sigma: torch.Tensor | float, sigma_next: torch.Tensor | float
    ) -> torch.Tensor:
        """One Euler step of the probability-flow ODE: x + (sigma_next - sigma) * flow."""
        return x_t + (broadcast_sigma(sigma_next, x_t) - broadcast_sigma(sigma, x_t)) * flow

    # ---- the few-step student ----
    def student_step(
        self, x_t: torch.Tensor, flow: torch.Tensor, k: int, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Student update from step k (sigma_k) as in CausVid / Self-Forcing.

        Predicts x0 = x_t - sigma_k * flow; at the last step returns x0, otherwise re-noises it to
        sigma_{k+1} with fresh noise: (1 - sigma_{k+1}) * x0 + sigma_{k+1} * noise. The caller owns
        the noise (and so the seed); it must be given for every step but the last.
        """
        if not 0 <= k < self.num_student_steps:
            raise IndexError(f"student step {k} out of range 0..{self.num_student_steps - 1}")
        x0 = self.x0_from_flow(x_t, flow, self._student[k])
        if k == self.num_student_steps - 1:
            return x0
        if noise is None:
            raise ValueError(f"student step {k} re-noises to sigma {self._student[k + 1]:.4f}: pass noise")
        return self.add_noise(x0, noise, self._student[k + 1])

    # ---- the multi-step teacher sampler ----
    def sample(
        self,
        model_fn: ModelFn,
        noise: torch.Tensor,
        sigmas: torch.Tensor,
        guidance: float | None = None,
        solver: str = "euler",
        keep_sigmas: Sequence[float] | torch.Tensor | None = None,
        per_frame_timesteps: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Integrate the flow ODE from `noise` (at sigmas[0]) along `sigmas` `[N+1]` (decreasing).

        model_fn(x_t, t) gets t = sigma * num_train_timesteps as `[B]` (or `[B, F]` with
        `per_frame_timesteps`). Without `guidance` it returns one flow; with `guidance` g it returns
        (flow_cond, flow_uncond) and the flow used is **uncond + g * (cond - uncond)**, so g = 1 is
        the conditional model and Self-Forcing's `cond + 3 * (cond - uncond)` is g = 4.

        solver: "euler" (1 model call per step) or "heun" (2nd-order predictor-corrector: 2 calls
        per step, the correction skipped on a step that ends at sigma 0).

        keep_sigmas: also return the states at these sigmas (each snapped to the nearest grid point
        of `sigmas`, see `nearest_grid_indices`) as `[K, B, C, F, H, W]`, e.g. the ODE pairs at the
        student's timesteps. Returns x at sigmas[-1], or (x, kept) when keep_sigmas is given.
        """
        if solver not in SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
        sigmas = sigmas.to(torch.float32).cpu()
        if sigmas.ndim != 1 or sigmas.numel() < 2:
            raise ValueError("sigmas must be a 1-D grid with at least 2 points")
        keep_idx = nearest_grid_indices(sigmas, keep_sigmas) if keep_sigmas is not None else []
        kept: dict[int, torch.Tensor] = {}
        b, _, f = noise.shape[:3]

        def flow_at(x: torch.Tensor, sigma: float) -> torch.Tensor:
            t = torch.full((b, f) if per_frame_timesteps else (b,), sigma * self.num_train_timesteps,
                           device=x.device, dtype=torch.float32)
            out = model_fn(x, t)
            if guidance is None:
                if isinstance(out, tuple):
                    raise ValueError("model_fn returned (cond, uncond) but no guidance scale was given")
                return out
            if not isinstance(out, tuple) or len(out) != 2:
                raise ValueError("with guidance, model_fn must return (flow_cond, flow_uncond)")
            cond, uncond = out
            return uncond + guidance * (cond - uncond)

        x = noise
        for i in range(sigmas.numel() - 1):
            if i in keep_idx:
                kept[i] = x
            s, s_next = float(sigmas[i]), float(sigmas[i + 1])
            d = flow_at(x, s)
            x_euler = self.step_to(x, d, s, s_next)
            if solver == "heun" and s_next > 0:
                d_next = flow_at(x_euler, s_next)
                x = self.step_to(x, 0.5 * (d + d_next), s, s_next)
            else:
                x = x_euler
        kept[sigmas.numel() - 1] = x
        if keep_sigmas is None:
            return x
        return x, torch.stack([kept[i] for i in keep_idx])
