"""Every mask builder against a dense definition written independently with Python loops."""

import math

import pytest
import torch

from kernels import BlockList, RingLayout
from kernels.masks import (TokenFrames, block_causal_mask, sink_window_mask, spatiotemporal_mask,
                           topk_block_list)


def _simulate_ring(layout: RingLayout, frames_written: int) -> list[int]:
    """Frame held by each slot after writing frames 0..frames_written-1 one by one (-1 = empty)."""
    slots = [-1] * layout.num_slots
    ring_next = 0
    for f in range(frames_written):
        if f < layout.sink_frames:
            slots[f] = f
        else:
            slots[layout.sink_frames + ring_next] = f
            ring_next = (ring_next + 1) % layout.window_frames
    for i in range(layout.chunk_frames):
        slots[layout.sink_frames + layout.window_frames + i] = frames_written + i
    return slots


def _dense(rule, lq, lk) -> torch.Tensor:
    return torch.tensor([[bool(rule(qi, ki)) for ki in range(lk)] for qi in range(lq)])


def _built(mod, lq, lk, block=16) -> torch.Tensor:
    return BlockList.from_mask_mod(mod, lq, lk, block_q=block, block_kv=block).validate().to_dense()[0, 0]


@pytest.mark.parametrize("frames_written", [0, 2, 3, 5, 11, 14])
def test_ring_slots_follow_the_writes(frames_written):
    layout = RingLayout(sink_frames=2, window_frames=3, chunk_frames=2, tokens_per_frame=4)
    assert layout.slot_frames(frames_written).tolist() == _simulate_ring(layout, frames_written)


def test_ring_slots_agree_with_the_model_cache():
    from models.config import preset
    from models.kv_cache import RollingKVCache

    cfg = preset("tiny")
    cache = RollingKVCache(cfg, max_batch=1)
    layout = RingLayout.from_config(cfg)
    for n in range(0, 3 * cfg.stream.window_frames):
        cache.frames[0] = n
        expected = [-1] * cache.slots
        for f in cache.cached_frames(0):
            expected[cache.slot_of(f)] = f
        assert layout.slot_frames(n)[: cache.slots].tolist() == expected


def test_block_causal_training_mask():
    tpf, chunk, frames = 5, 2, 5
    tf = TokenFrames.for_sequence(frames, tpf, chunk)
    n = frames * tpf
    expected = _dense(lambda qi, ki: (ki // tpf) // chunk <= (qi // tpf) // chunk, n, n)
    assert torch.equal(_built(block_causal_mask(tf), n, n), expected)


def test_per_chunk_frame_window_training_mask():
    tpf, chunk, frames, sink, window = 4, 2, 8, 1, 3
    tf = TokenFrames.for_sequence(frames, tpf, chunk)
    n = frames * tpf

    def rule(qi, ki):
        qf, kf = qi // tpf, ki // tpf
        chunk_end = (qf // chunk) * chunk + chunk - 1
        return kf <= chunk_end and (kf < sink or kf > chunk_end - window)

    assert torch.equal(_built(sink_window_mask(tf, sink, window), n, n), _dense(rule, n, n))


@pytest.mark.parametrize("frames_written,window", [(1, 4), (4, 6), (13, 6), (13, 3)])
def test_sink_window_over_the_ring_with_wrap_around(frames_written, window):
    layout = RingLayout(sink_frames=2, window_frames=4, chunk_frames=2, tokens_per_frame=6)
    slots = _simulate_ring(layout, frames_written)
    chunk_end = frames_written + layout.chunk_frames - 1
    tpf = layout.tokens_per_frame

    def rule(qi, ki):
        f = slots[ki // tpf]
        return f >= 0 and (f < layout.sink_frames or f > chunk_end - window)

    tf = TokenFrames.for_ring(layout, frames_written)
    built = _built(sink_window_mask(tf, layout.sink_frames, window), layout.q_len, layout.kv_len)
    assert torch.equal(built, _dense(rule, layout.q_len, layout.kv_len))


def test_spatiotemporal_neighbourhood_over_the_ring():
    h, w, radius, recent = 3, 4, 1, 2
    layout = RingLayout(sink_frames=1, window_frames=3, chunk_frames=1, tokens_per_frame=h * w)
    frames_written = 6
    slots = _simulate_ring(layout, frames_written)
    tpf = layout.tokens_per_frame

    def rule(qi, ki):
        qf, kf = frames_written + qi // tpf, slots[ki // tpf]
        (qy, qx), (ky, kx) = divmod(qi % tpf, w), divmod(ki % tpf, w)
        near = abs(qy - ky) <= radius and abs(qx - kx) <= radius
        return kf >= 0 and kf <= frames_written and (qf - kf < recent or near)

    tf = TokenFrames.for_ring(layout, frames_written)
    built = _built(spatiotemporal_mask(tf, tpf, w, radius, recent), layout.q_len, layout.kv_len)
    expected = _dense(rule, layout.q_len, layout.kv_len)
    assert torch.equal(built, expected)
    assert not expected.all()


def test_topk_keeps_the_highest_pooled_scores_within_the_base():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 2, 40, 8, generator=g), torch.randn(2, 2, 72, 8, generator=g)
    block = 16
    valid = torch.ones(2, 1, 1, 72, dtype=torch.bool)
    valid[1, ..., 20:40] = False  # batch 1: kv block 1 empty, blocks 0 and 2 partial
    base = BlockList.from_key_padding(valid, 40, block, block)
    fraction = 0.5
    bl = topk_block_list(q, k, keep_fraction=fraction, base=base, block_q=block, block_kv=block).validate()
    nq, nkv = math.ceil(40 / block), math.ceil(72 / block)
    n_keep = math.ceil(fraction * nkv)
    expected = torch.zeros(2, 2, 40, 72, dtype=torch.bool)
    for b in range(2):
        for h in range(2):
            for qb in range(nq):
                qs = q[b, h, qb * block:(qb + 1) * block].mean(0)
                scores = []
                for kb in range(nkv):
                    cols = valid[b, 0, 0, kb * block:(kb + 1) * block]
                    if cols.any():
                        scores.append((float(qs @ k[b, h, kb * block:(kb + 1) * block].mean(0)), kb))
                for _, kb in sorted(scores, reverse=True)[:n_keep]:
                    expected[b, h, qb * block:(qb + 1) * block, kb * block:(kb + 1) * block] = True
    expected &= valid
    assert torch.equal(bl.to_dense(), expected)


def test_topk_argument_errors():
    q = torch.randn(1, 1, 16, 8)
    with pytest.raises(ValueError, match="exactly one"):
        topk_block_list(q, q, block_q=16, block_kv=16)
