"""Training through the Triton kernel: forward in Triton, backward by recomputation.

The backward recomputes the attention densely through the fp32 torch reference (same block
list, same scale) and backpropagates through that: exact gradients, O(Lq x Lk) memory per
(batch, head). It works on CPU and GPU and is meant for tests and small-scale training; for
training sparse patterns at Wan scale on a GPU use `backend="flex"` (compiled FlexAttention,
whose fused backward honours the same BlockList via `to_block_mask()`).
"""

from __future__ import annotations

import torch

from kernels.block_list import BlockList
from kernels.reference import reference_attention


class _SparseAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, block_list: BlockList, scale):
        from kernels.triton_attention import sparse_attention_forward

        ctx.save_for_backward(q, k, v)
        ctx.block_list, ctx.scale = block_list, scale
        return sparse_attention_forward(q, k, v, block_list, scale)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v = ctx.saved_tensors
        with torch.enable_grad():
            qr, kr, vr = (t.detach().requires_grad_(t.requires_grad) for t in (q, k, v))
            out = reference_attention(qr, kr, vr, block_list=ctx.block_list, scale=ctx.scale)
            inputs = [t for t in (qr, kr, vr) if t.requires_grad]
            grads = iter(torch.autograd.grad(out, inputs, grad_out.float()))
        dq, dk, dv = ((next(grads).to(t.dtype) if t.requires_grad else None) for t in (qr, kr, vr))
        return dq, dk, dv, None, None


def sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_list: BlockList,
                     scale: float | None = None) -> torch.Tensor:
    """Triton block-sparse attention, differentiable. Shapes as `sparse_attention_forward`."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return _SparseAttentionFunction.apply(q, k, v, block_list, scale)
    from kernels.triton_attention import sparse_attention_forward

    return sparse_attention_forward(q, k, v, block_list, scale)
