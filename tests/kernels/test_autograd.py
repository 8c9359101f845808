"""Gradients through the Triton backend equal autograd through the fp32 reference."""

import torch

import kernels
from kernels import BlockList, reference_attention
from kernels.masks import TokenFrames, block_causal_mask


def test_triton_backward_matches_reference_autograd():
    tf = TokenFrames.for_sequence(num_frames=4, tokens_per_frame=8, chunk_frames=2)  # L = 32
    bl = BlockList.from_mask_mod(block_causal_mask(tf), 32, 32, block_q=16, block_kv=16)
    g = torch.Generator().manual_seed(0)
    leaves = [torch.randn(1, 2, 32, 16, generator=g, dtype=torch.float64).float().requires_grad_() for _ in range(3)]
    grad_out = torch.randn(1, 2, 32, 16, generator=g)

    out = kernels.attention(*leaves, block_list=bl, backend="triton")
    grads = torch.autograd.grad(out, leaves, grad_out)

    ref_leaves = [t.detach().clone().requires_grad_() for t in leaves]
    ref = reference_attention(*ref_leaves, block_list=bl)
    ref_grads = torch.autograd.grad(ref, ref_leaves, grad_out)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for got, want in zip(grads, ref_grads):
        assert got.abs().sum() > 0
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_gradient_only_for_inputs_that_need_it():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 1, 16, 16, generator=g, requires_grad=True)
    k, v = torch.randn(1, 1, 32, 16, generator=g), torch.randn(1, 1, 32, 16, generator=g)
    out = kernels.attention(q, k, v, block_list=BlockList.dense(16, 32, 16, 16), backend="triton")
    out.sum().backward()
    assert q.grad is not None and q.grad.shape == q.shape
