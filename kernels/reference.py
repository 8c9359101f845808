"""The dense fp32 torch reference: the single oracle every attention backend is tested against."""

from __future__ import annotations

import math

import torch

from kernels.block_list import BlockList


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                        block_list: BlockList | None = None, scale: float | None = None) -> torch.Tensor:
    """Softmax attention in fp32 over the pattern of `block_list` (or `mask`, or everything).

    q: [B, H, Lq, D]; k, v: [B, H, Lk, D]; mask: bool broadcastable to [B, H, Lq, Lk].
    Returns fp32 [B, H, Lq, D]; a query row with nothing to attend gives zeros (not NaN).
    Differentiable: the Triton backend's backward recomputes through it.
    """
    if mask is not None and block_list is not None:
        raise ValueError("pass mask or block_list, not both")
    allowed = block_list.to_dense() if block_list is not None else mask
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale  # [B, H, Lq, Lk]
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    row_max = scores.amax(-1, keepdim=True)  # [B, H, Lq, 1]
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max)).detach()
    weights = torch.exp(scores - row_max)  # [B, H, Lq, Lk]; masked entries are exactly 0
    total = weights.sum(-1, keepdim=True)
    out = torch.matmul(weights, v.float())  # [B, H, Lq, D]
    return out / torch.where(total > 0, total, torch.ones_like(total))


def reference_stream_attention(call) -> torch.Tensor:
    """The streaming ring-cache call (`kernels.streaming.StreamCall`) in fp32: keys and queries
    rotated, cache and chunk concatenated, invalid slots masked, then `reference_attention`.
    Returns fp32 [B, Lq, H, D]. Differentiable in the call's q, k, v."""
    from kernels.streaming import compose

    q, k, v, mask = compose(call, torch.float32)
    return reference_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask).transpose(1, 2)
