"""Training through the Triton kernels: forward in Triton, backward by recomputation.

The backward recomputes the attention densely through the fp32 torch reference (same block
list, same scale) and backpropagates through that: exact gradients, O(Lq x Lk) memory per
(batch, head). It works on CPU and GPU and is meant for tests and small-scale training; for
training sparse patterns at Wan scale on a GPU use `backend="flex"` (compiled FlexAttention,
whose fused backward honours the same BlockList via `to_block_mask()`).

The fused streaming kernel does the same: Self-Forcing rollouts keep gradients through one
exit step, and its backward recomputes `reference_stream_attention` (the cache is detached
there: gradients flow to the chunk's q, k, v only).
"""

from __future__ import annotations

import dataclasses

import torch

from kernels.block_list import BlockList
from kernels.reference import reference_attention, reference_stream_attention


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


class _FusedStreamFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, call):
        from kernels.stream_kernel import stream_attention_forward

        ctx.save_for_backward(q, k, v)
        ctx.call = call
        return stream_attention_forward(dataclasses.replace(call, q=q, k=k, v=v))

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v = ctx.saved_tensors
        with torch.enable_grad():
            qr, kr, vr = (t.detach().requires_grad_(t.requires_grad) for t in (q, k, v))
            out = reference_stream_attention(dataclasses.replace(ctx.call, q=qr, k=kr, v=vr))
            inputs = [t for t in (qr, kr, vr) if t.requires_grad]
            grads = iter(torch.autograd.grad(out, inputs, grad_out.float()))
        dq, dk, dv = ((next(grads).to(t.dtype) if t.requires_grad else None) for t in (qr, kr, vr))
        return dq, dk, dv, None


def fused_stream_attention(call) -> torch.Tensor:
    """The fused streaming kernel on a `kernels.streaming.StreamCall`, differentiable in q, k, v.
    Returns [B, Lq, H, D]."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (call.q, call.k, call.v)):
        return _FusedStreamFunction.apply(call.q, call.k, call.v, call)
    from kernels.stream_kernel import stream_attention_forward

    return stream_attention_forward(call)
