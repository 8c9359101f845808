"""Rotary position embedding as the attention kernels see it: factored tables and the rotation.

Wan's 3D RoPE rotates channel pairs (2i, 2i+1) of each head. The first `Pt` pairs turn with the
token's frame position, the other `Ps` pairs with its row and column inside the frame. So the
tables factor into a per-frame part and a per-in-frame-token part, both tiny:

    frame_cos/sin [B, F, Pt]   (F frames of a call, each at its own position)
    grid_cos/sin  [T, Ps]      (T tokens per frame, row-major)

`token_tables` expands them to per-token tables for the torch paths; the fused Triton kernel reads
the factored tables directly while loading K (kernels/stream_kernel.py). The angles themselves are
the model's business (models/rope.py builds these tables).
"""

from __future__ import annotations

import torch


def token_tables(frame_cos: torch.Tensor, frame_sin: torch.Tensor, grid_cos: torch.Tensor,
                 grid_sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cos/sin [B, F*T, 1, Pt + Ps] for F frames of T tokens (frame-major)."""
    b, f, pt = frame_cos.shape
    t, ps = grid_cos.shape

    def expand(frame: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        per_frame = frame[:, :, None, :].expand(b, f, t, pt)  # [B, F, T, Pt]
        per_token = grid[None, None].expand(b, f, t, ps)  # [B, F, T, Ps]
        return torch.cat([per_frame, per_token], dim=-1).reshape(b, f * t, 1, pt + ps)

    return expand(frame_cos, grid_cos), expand(frame_sin, grid_sin)


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of x [B, L, H, D] by cos/sin [B, L, 1, D/2]; computed in fp32, returned in x's dtype."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # [B, L, H, D/2] each
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)
    return out.type_as(x)
