"""Attention backend dispatch (minimal first version: PyTorch SDPA)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention.

    q: [B, H, Lq, D]; k, v: [B, H, Lk, D]; mask: bool, broadcastable to [B, H, Lq, Lk], True = attend.
    Returns [B, H, Lq, D].
    """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
