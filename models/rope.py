"""Wan's 3D rotary position embedding, computed from explicit frame positions.

The head dimension D is split into a temporal part and two spatial parts
(h = w = 2 * (D // 6), t = D - h - w). Each part rotates channel pairs (2i, 2i+1) by
angle pos * theta^(-2i / d_part), exactly as diffusers' `WanRotaryPosEmbed` does.

Angles are computed from the positions themselves (not looked up in a fixed table), so any
frame position works: the streaming cache passes window-relative positions, which keeps them
small however long the stream runs.
"""

from __future__ import annotations

import torch


class RotaryEmbedding3D(torch.nn.Module):
    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        self.h_dim = self.w_dim = 2 * (head_dim // 6)
        self.t_dim = head_dim - self.h_dim - self.w_dim
        self.theta = theta
        for name, d in (("t", self.t_dim), ("h", self.h_dim), ("w", self.w_dim)):
            inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64)[: d // 2] / d))  # [d/2]
            self.register_buffer(f"inv_freq_{name}", inv_freq, persistent=False)

    def _angles(self, pos: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
        return pos.to(torch.float64).unsqueeze(-1) * inv_freq  # [..., d/2]

    def cos_sin(self, frame_pos: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for every token of a frame grid.

        frame_pos: [B, F] frame positions (any integers). height, width: tokens per frame side.
        Returns cos, sin: [B, F*height*width, 1, D/2] float32 (broadcast over heads).
        """
        b, f = frame_pos.shape
        dev = frame_pos.device
        ang_t = self._angles(frame_pos, self.inv_freq_t)  # [B, F, t/2]
        ang_h = self._angles(torch.arange(height, device=dev), self.inv_freq_h)  # [h, h_dim/2]
        ang_w = self._angles(torch.arange(width, device=dev), self.inv_freq_w)  # [w, w_dim/2]
        ang = torch.cat(
            [
                ang_t[:, :, None, None, :].expand(b, f, height, width, -1),
                ang_h[None, None, :, None, :].expand(b, f, height, width, -1),
                ang_w[None, None, None, :, :].expand(b, f, height, width, -1),
            ],
            dim=-1,
        ).reshape(b, f * height * width, 1, (self.t_dim + self.h_dim + self.w_dim) // 2)  # [B, L, 1, D/2]
        return ang.cos().float(), ang.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of x [B, L, H, D] by cos/sin [B, L, 1, D/2]; computed in fp32."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # [B, L, H, D/2] each
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)
    return out.type_as(x)
