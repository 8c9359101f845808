"""The fused streaming kernel (ring-buffer K/V, RoPE on load) against the fp32 reference.

CPU: Triton interpreter. Shapes are odd on purpose: 12 tokens per frame (tiles straddle slots),
chunks that end mid-tile, head dims 32/64/128, an empty cache, sink only, a full window and a
wrapped ring, rows read out of order.
"""

import dataclasses

import pytest
import torch

from kernels import reference_attention
from kernels.reference import reference_stream_attention
from kernels.stream_kernel import stream_attention_forward
from kernels.streaming import compose
from tests.kernels.stream_cases import ring_call

TOL = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 1.5e-2}  # relative L2 error


def _check(call):
    out = stream_attention_forward(call)
    ref = reference_stream_attention(call)
    assert out.shape == call.q.shape and out.dtype == call.q.dtype
    assert torch.isfinite(out).all()
    err = (out.float() - ref).norm() / ref.norm()
    assert err < TOL[call.q.dtype], f"relative error {err:.2e}"
    return out, ref


@pytest.mark.parametrize("head_dim", [32, 64, 128])
def test_head_dims_partial_blocks(head_dim):
    # 12 tokens per frame, 6 slots: 72 cache tokens and a 24-token chunk, neither a multiple of 32
    _check(ring_call(head_dim=head_dim, frames_written=(3, 6), seed=head_dim))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", ["empty", "sink_only", "half_window", "full_window", "wrapped"])
def test_ring_states(dtype, case):
    written = {"empty": (0, 0), "sink_only": (1, 2), "half_window": (4, 3), "full_window": (6, 6),
               "wrapped": (11, 17)}[case]
    call = ring_call(dtype=dtype, frames_written=written, rows=[2, 0], seed=len(case))
    assert call.slot_valid.any() == (case != "empty")
    _check(call)


def test_invalid_slots_are_ignored_not_just_down_weighted():
    """Garbage (huge values) in slots that hold no frame must not change the output at all."""
    call = ring_call(frames_written=(1, 4), sink=2, window=4, tokens_per_frame=16, seed=3)
    before = stream_attention_forward(call)
    for i, row in enumerate(call.rows.tolist()):
        t = call.tokens_per_frame
        for slot in (~call.slot_valid[i]).nonzero().flatten().tolist():
            call.cache_k[row, slot * t:(slot + 1) * t] = 1e4
            call.cache_v[row, slot * t:(slot + 1) * t] = float("nan")
    torch.testing.assert_close(stream_attention_forward(call), before, atol=0, rtol=0)


def test_rope_is_applied_at_the_slot_positions():
    """Swapping two valid slots' K/V without swapping their positions changes the output
    (the rotation travels with the position table, not the physical order)."""
    call = ring_call(batch=1, frames_written=(6,), rows=[0], seed=5)
    out = stream_attention_forward(call)
    t = call.tokens_per_frame
    k = call.cache_k.clone()
    call.cache_k[0, 2 * t:3 * t], call.cache_k[0, 4 * t:5 * t] = k[0, 4 * t:5 * t], k[0, 2 * t:3 * t]
    assert (stream_attention_forward(call) - out).abs().max() > 1e-3
    _check(call)


def test_reference_is_plain_attention_over_rotated_keys():
    """The oracle itself: compose() + reference_attention, and the rotation preserves norms."""
    call = ring_call(frames_written=(6, 9), seed=7)
    q, k, v, mask = compose(call, torch.float32)
    assert mask.shape == (2, 1, 1, k.shape[1]) and q.shape == call.q.shape
    torch.testing.assert_close(q.norm(dim=-1), call.q.norm(dim=-1), atol=1e-4, rtol=1e-4)
    ref = reference_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask).transpose(1, 2)
    torch.testing.assert_close(reference_stream_attention(call), ref)


@pytest.mark.parametrize("radius, width", [(0, 4), (1, 4), (1, 3)])
def test_spatial_locality(radius, width):
    """Old window frames seen only near each query: the fused kernel equals the reference built
    from the same per-token mask, and the option changes the result."""
    call = ring_call(batch=2, frames_written=(6, 13), tokens_per_frame=12, width=width, seed=radius + width,
                     local_radius=radius, local_recent=1)
    assert call.slot_local.sum() >= 4
    mask = call.key_mask()
    assert mask.shape[2] == call.q.shape[1] and not mask.all()
    out, _ = _check(call)
    dense = stream_attention_forward(dataclasses.replace(call, slot_local=None))
    assert (out - dense).abs().max() > 1e-3
