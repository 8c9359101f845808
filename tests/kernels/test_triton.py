"""The Triton block-sparse forward against the dense fp32 reference (CPU: Triton interpreter)."""

import pytest
import torch

from kernels import BlockList, RingLayout, reference_attention
from kernels.masks import TokenFrames, sink_window_mask, topk_block_list
from kernels.triton_attention import sparse_attention_forward

TOL = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 1.5e-2}  # relative L2 error


def _qkv(b, h, lq, lk, d, dtype, seed=0, device="cpu"):
    g = torch.Generator(device="cpu").manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g).to(device=device, dtype=dtype) for n in (lq, lk, lk)]


def _check(q, k, v, bl):
    """Kernel output (poisoned buffer first) vs the reference on the same inputs."""
    out = sparse_attention_forward(q, k, v, bl)
    ref = reference_attention(q, k, v, block_list=bl)
    assert out.dtype == q.dtype and out.shape == q.shape
    assert torch.isfinite(out).all()
    err = (out.float() - ref).norm() / ref.norm().clamp_min(1e-12)
    assert err < TOL[q.dtype], f"relative error {err:.2e}"
    return out, ref


DTYPES = [torch.float32, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES)
def test_q_len_not_multiple_of_block(dtype):
    q, k, v = _qkv(1, 2, 40, 64, 32, dtype)
    _check(q, k, v, BlockList.dense(40, 64, block_q=32, block_kv=32))


@pytest.mark.parametrize("dtype", DTYPES)
def test_ragged_ring_tail_and_per_batch_validity(dtype):
    layout = RingLayout(sink_frames=1, window_frames=3, chunk_frames=1, tokens_per_frame=12)  # Lk = 60
    valid = torch.cat([layout.kv_valid(2), layout.kv_valid(9)])  # [2, 1, 1, 60]: ring half full / full
    bl = BlockList.from_key_padding(valid, layout.q_len, block_q=16, block_kv=16)
    q, k, v = _qkv(2, 2, layout.q_len, layout.kv_len, 16, dtype, seed=1)
    _check(q, k, v, bl)


@pytest.mark.parametrize("dtype", DTYPES)
def test_window_wrap_around(dtype):
    layout = RingLayout(sink_frames=1, window_frames=4, chunk_frames=2, tokens_per_frame=8)  # Lk = 56
    tf = TokenFrames.for_ring(layout, frames_written=11)  # the ring has wrapped twice
    bl = BlockList.from_mask_mod(sink_window_mask(tf, sink=1, window_frames=4), layout.q_len, layout.kv_len,
                                 block_q=16, block_kv=16)
    dense = bl.to_dense()[0, 0]
    assert not dense.all() and dense.any(1).all()
    q, k, v = _qkv(1, 2, layout.q_len, layout.kv_len, 32, dtype, seed=2)
    _check(q, k, v, bl)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sink_only(dtype):
    layout = RingLayout(sink_frames=2, window_frames=3, chunk_frames=1, tokens_per_frame=16)
    tf = TokenFrames.for_ring(layout, frames_written=2)  # ring empty: sink + the chunk
    bl = BlockList.from_mask_mod(sink_window_mask(tf, sink=2, window_frames=1), layout.q_len, layout.kv_len,
                                 block_q=16, block_kv=16)
    assert bl.to_dense()[0, 0, 0].nonzero().flatten().tolist() == list(range(32)) + list(range(80, 96))
    q, k, v = _qkv(1, 1, layout.q_len, layout.kv_len, 32, dtype, seed=3)
    _check(q, k, v, bl)


@pytest.mark.parametrize("dtype", DTYPES)
def test_query_block_without_kv_blocks_gives_zeros(dtype):
    # rows 0..15 (a whole query block) attend nothing; rows 16..23 only some keys (partial tile)
    mask = torch.zeros(1, 1, 40, 48, dtype=torch.bool)
    mask[..., 16:24, 5:20] = True
    mask[..., 24:, :] = True
    bl = BlockList.from_dense(mask, block_q=16, block_kv=16)
    assert int(bl.full_kv_num_blocks[0, 0, 0] + bl.kv_num_blocks[0, 0, 0]) == 0
    q, k, v = _qkv(1, 2, 40, 48, 16, dtype, seed=4)
    out, _ = _check(q, k, v, bl)
    assert (out[:, :, :16] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 128])
def test_head_dims(dtype, head_dim):
    q, k, v = _qkv(1, 1, 20, 40, head_dim, dtype, seed=5)
    mask = torch.rand(1, 1, 20, 40, generator=torch.Generator().manual_seed(0)) > 0.3
    _check(q, k, v, BlockList.from_dense(mask, block_q=16, block_kv=16))


def test_per_head_topk_pattern_and_strided_inputs():
    """Per-head block lists, and q/k/v as transposed views (the model's [B, L, H, D] buffers)."""
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(1, n, 2, 32, generator=g).transpose(1, 2) for n in (32, 80, 80))  # [B, H, L, D] views
    bl = topk_block_list(q, k, keep_blocks=2, block_q=16, block_kv=16)
    assert bl.kv_indices.shape[1] == 2
    _check(q, k, v, bl)


def test_bf16_runs_in_interpreter():
    q, k, v = _qkv(1, 1, 24, 40, 32, torch.bfloat16, seed=7)
    _check(q, k, v, BlockList.dense(24, 40, block_q=16, block_kv=16))


def test_mismatched_block_list_is_rejected():
    q, k, v = _qkv(1, 1, 16, 32, 16, torch.float32)
    with pytest.raises(ValueError, match="block list is for"):
        sparse_attention_forward(q, k, v, BlockList.dense(16, 48, block_q=16, block_kv=16))


@pytest.mark.gpu
@pytest.mark.parametrize("frames", [9, 21])
@pytest.mark.parametrize("pattern", ["dense", "topk"])
def test_bf16_wan_shapes_on_gpu(frames, pattern):
    tokens_per_frame, heads, head_dim = 1560, 12, 128
    q, k, v = _qkv(1, heads, 3 * tokens_per_frame, frames * tokens_per_frame, head_dim, torch.bfloat16,
                   seed=frames, device="cuda")
    if pattern == "dense":
        bl = BlockList.dense(q.shape[2], k.shape[2], device="cuda")
    else:
        bl = topk_block_list(q, k, keep_fraction=0.25)
    _check(q, k, v, bl)
