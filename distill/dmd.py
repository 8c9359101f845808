"""Distribution Matching Distillation losses (pure functions of tensors; no models inside).

DMD (Yin et al. 2024, "One-step Diffusion with Distribution Matching Distillation"):
the generator G minimises KL(p_fake || p_real); its gradient (eq. 7) is
    grad_theta KL = E_{t, x_t} [ w_t (s_fake(x_t, t) - s_real(x_t, t)) dG/dtheta ],
with the scores expressed through the x0 predictions of a real (teacher) and a fake (critic)
denoiser at a noised generator sample x_t = (1 - sigma) x + sigma eps. Eq. 8 sets the weight to
1 / mean|x - mu_real(x_t, t)| (per sample, over all its elements), so the update is
    g = (mu_fake(x_t) - mu_real(x_t)) / mean|x - mu_real(x_t)|.
DMD2 (Yin et al. 2024, "Improved Distribution Matching Distillation", Sec. 4) drops the regression
loss and trains the fake denoiser by the ordinary diffusion (here flow-matching) loss on the
generator's detached samples, updated several times per generator step (two time-scale update
rule). Self-Forcing (Huang et al. 2025) applies both to autoregressive rollouts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None, dims: tuple[int, ...] | None = None) -> torch.Tensor:
    """Mean of x over `dims` (None: all), or over the elements where the broadcast `mask` is 1; a mask of
    non-negative weights gives the weighted mean sum(w x) / sum(w)."""
    if mask is None:
        return x.mean() if dims is None else x.mean(dim=dims, keepdim=True)
    mask = mask.to(x.dtype).expand_as(x)
    if dims is None:
        return (x * mask).sum() / mask.sum().clamp_min(1.0)
    return (x * mask).sum(dim=dims, keepdim=True) / mask.sum(dim=dims, keepdim=True).clamp_min(1.0)


def dmd_gradient(x: torch.Tensor, real_x0: torch.Tensor, fake_x0: torch.Tensor, eps: float = 1e-6,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """DMD eq. 7 direction with the eq. 8 normaliser: (fake_x0 - real_x0) / mean|x - real_x0| per sample.

    x, real_x0, fake_x0: [B, ...] (x the generator sample, the others the denoisers' x0 predictions).
    mask: broadcastable to x (e.g. [B, 1, F, 1, 1]), > 0 where an element is judged: the normaliser
    is the plain mean over those elements only (a loss weight in the mask does not change it).
    """
    dims = tuple(range(1, x.ndim))
    judged = None if mask is None else mask > 0
    norm = masked_mean((x.detach() - real_x0).abs(), judged, dims).clamp_min(eps)  # [B, 1, ...]
    return (fake_x0 - real_x0) / norm


def dmd_generator_loss(x: torch.Tensor, real_x0: torch.Tensor, fake_x0: torch.Tensor,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """Surrogate whose gradient w.r.t. x is the DMD gradient (eq. 7/8) divided by x.numel():
    0.5 * mean((x - sg[x - g])^2)  =>  d/dx = g / numel. real_x0 / fake_x0 are treated as constants.
    With a 0/1 `mask` (broadcastable to x) only the masked elements count: d/dx = mask * g / mask.sum()
    (frames a window holds as context only, e.g. those of another prompt, get no gradient from it);
    a mask of weights (an avatar's mouth weighted up) scales each element's gradient the same way,
    so the fixed point (fake = real) is the same and only where the generator moves first changes."""
    with torch.no_grad():
        target = x - dmd_gradient(x, real_x0.detach(), fake_x0.detach(), mask=mask)
    return 0.5 * masked_mean((x.float() - target.float()) ** 2, mask)


def flow_matching_loss(pred_flow: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """The fake score's (critic's) objective on generator samples (DMD2 Sec. 4.1, in flow form):
    || v_phi(x_t, t) - (eps - x0) ||^2 with x0 = sg[G(z)] (mean over the masked elements with a mask)."""
    if mask is None:
        return F.mse_loss(pred_flow.float(), (eps - x0).float())
    return masked_mean((pred_flow.float() - (eps - x0).float()) ** 2, mask)


def cfg_flow(cond: torch.Tensor, uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance as framecast pins it: uncond + g * (cond - uncond)
    (Self-Forcing's real score `cond + 3 (cond - uncond)` is g = 4)."""
    return uncond + guidance * (cond - uncond)


def lead_sigma(sigma: torch.Tensor, frames: int) -> torch.Tensor:
    """Per-frame sigmas [B, F] from per-clip ones [B] (or per-frame [B, F]) with frame 0 clean (sigma 0):
    a clip led by a conditioning frame that is never noised (an avatar's start image)."""
    s = sigma[:, None].expand(-1, frames).clone() if sigma.ndim == 1 else sigma.clone()
    s[:, 0] = 0.0
    return s
