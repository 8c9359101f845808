"""Wan's 3D rotary position embedding, computed from explicit frame positions.

The head dimension D is split into a temporal part and two spatial parts
(h = w = 2 * (D // 6), t = D - h - w). Each part rotates channel pairs (2i, 2i+1) by
angle pos * theta^(-2i / d_part), exactly as diffusers' `WanRotaryPosEmbed` does.

Angles are computed from the positions themselves (not looked up in a fixed table), so any
frame position works: the streaming cache passes window-relative positions, which keeps them
small however long the stream runs. A pair's angle depends on one coordinate only, so the
tables factor into a per-frame part and a per-in-frame-token part (`frame_tables`,
`grid_tables`); the fused streaming kernel reads those factors while it loads the keys.
"""

from __future__ import annotations

import torch

from kernels.rope import rotate_pairs as apply_rotary  # noqa: F401  (the rotation, shared with kernels)
from kernels.rope import token_tables


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

    def frame_tables(self, frame_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin of the temporal pairs: frame_pos [B, F] (any integers) -> [B, F, t/2] float32."""
        ang = self._angles(frame_pos, self.inv_freq_t)
        return ang.cos().float(), ang.sin().float()

    def grid_tables(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin of the spatial pairs of each in-frame token (row-major) -> [height*width, (h+w)/2] float32."""
        dev = self.inv_freq_h.device
        ang_h = self._angles(torch.arange(height, device=dev), self.inv_freq_h)  # [height, h/2]
        ang_w = self._angles(torch.arange(width, device=dev), self.inv_freq_w)  # [width, w/2]
        ang = torch.cat([ang_h[:, None, :].expand(height, width, -1), ang_w[None, :, :].expand(height, width, -1)],
                        dim=-1).reshape(height * width, -1)
        return ang.cos().float(), ang.sin().float()

    def cos_sin(self, frame_pos: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for every token of a frame grid.

        frame_pos: [B, F] frame positions (any integers). height, width: tokens per frame side.
        Returns cos, sin: [B, F*height*width, 1, D/2] float32 (broadcast over heads).
        """
        fc, fs = self.frame_tables(frame_pos)
        gc, gs = self.grid_tables(height, width)
        return token_tables(fc, fs, gc.to(fc.device), gs.to(fc.device))
