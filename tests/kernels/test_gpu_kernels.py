"""GPU: the Triton kernels in bf16 at Wan2.1-1.3B shapes against the fp32 reference, with bounds.

Skipped without CUDA (run by scripts/gpu-check.sh). Bounds: relative L2 error of bf16 attention
with fp32 accumulation lands between 1e-3 and 1e-2; 1.5e-2 is the bar (the CPU tests' bf16 bar).
Every output is poisoned first (NaN) so an unwritten element fails.
"""

import pytest
import torch

from kernels import BlockList, reference_attention
from kernels.bench_fused import WAN, ring_call
from kernels.reference import reference_stream_attention

pytestmark = pytest.mark.gpu
BF16_BOUND = 1.5e-2


def _rel(out, ref):
    assert torch.isfinite(out).all(), "unwritten or non-finite output"
    return float((out.float() - ref).norm() / ref.norm())


@pytest.mark.parametrize("batch, written", [(1, 3), (1, 7), (2, 120)])  # sink only, half window, wrapped ring
def test_fused_stream_kernel_bf16_at_wan_shape(batch, written, monkeypatch):
    from kernels import stream_kernel

    call = ring_call(batch=batch, frames_written=(written,) * batch, dtype=torch.bfloat16, device="cuda",
                     seed=written, **WAN)
    real_empty = torch.empty_like
    monkeypatch.setattr(stream_kernel.torch, "empty_like", lambda t: real_empty(t).fill_(float("nan")))
    out = stream_kernel.stream_attention_forward(call)
    err = _rel(out, reference_stream_attention(call))
    print(f"fused stream B={batch} frames_written={written}: rel err {err:.2e}")
    assert err < BF16_BOUND


def test_block_sparse_kernel_bf16_at_wan_shape():
    from kernels.masks import block_causal_block_list
    from kernels.triton_attention import sparse_attention_forward

    bl = block_causal_block_list(6, 1560, 3, "cuda")  # 9360 tokens, two chunks
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, 12, 9360, 128, device="cuda", generator=g).bfloat16() for _ in range(3))
    err = _rel(sparse_attention_forward(q, k, v, bl), reference_attention(q, k, v, block_list=bl))
    print(f"block-causal triton: rel err {err:.2e}")
    assert err < BF16_BOUND
    dense = BlockList.dense(4680, 18720, device="cuda")
    q, k, v = q[:, :, :4680], torch.cat([k, k], 2), torch.cat([v, v], 2)
    err = _rel(sparse_attention_forward(q, k, v, dense), reference_attention(q, k, v))
    assert err < BF16_BOUND


def test_block_causal_training_through_flex_with_gradients():
    """What `auto` runs for a training pass with gradients on CUDA: FlexAttention (compiled)."""
    import kernels
    from kernels.masks import block_causal_block_list

    bl = block_causal_block_list(6, 256, 2, "cuda")
    g = torch.Generator(device="cuda").manual_seed(1)
    q, k, v = (torch.randn(1, 4, 1536, 128, device="cuda", generator=g).bfloat16().requires_grad_(True)
               for _ in range(3))
    assert kernels.select_backend(q, dense=False) == "flex"
    out = kernels.attention(q, k, v, block_list=bl)
    ref = reference_attention(q, k, v, block_list=bl)
    assert _rel(out, ref.detach()) < BF16_BOUND
    grad = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, (q, k, v), grad.to(out.dtype)), torch.autograd.grad(ref, (q, k, v), grad)):
        assert _rel(got, want.float()) < 3e-2
