"""Random `StreamCall`s laid out like the model's rolling cache (shared by the streaming tests)."""

from __future__ import annotations

import torch

from kernels import StreamCall, StreamRope


def rope_tables(positions: torch.Tensor, head_dim: int, tokens_per_frame: int, width: int, seed: int = 0):
    """Wan-like factored tables: Pt temporal pairs turned by frame position, the rest by row/column."""
    pt = (head_dim - 4 * (head_dim // 6)) // 2
    ps = head_dim // 2 - pt
    g = torch.Generator().manual_seed(seed)
    inv_t = torch.rand(pt, generator=g, dtype=torch.float64) + 0.05
    inv_s = torch.rand(ps, generator=g, dtype=torch.float64) + 0.05
    ang_f = positions.double()[..., None] * inv_t  # [B, F, Pt]
    tok = torch.arange(tokens_per_frame)
    coord = torch.where(torch.arange(ps) < ps // 2, (tok // width)[:, None], (tok % width)[:, None])  # [T, Ps]
    ang_g = coord.double() * inv_s
    return StreamRope(ang_f.cos().float(), ang_f.sin().float(), ang_g.cos().float(), ang_g.sin().float())


def ring_call(batch=2, heads=2, head_dim=32, tokens_per_frame=12, width=4, sink=2, window=4, chunk=2,
              frames_written=(0, 5), rows=None, max_batch=3, dtype=torch.float32, seed=0,
              requires_grad=False) -> StreamCall:
    """One layer's call for `batch` streams that have committed `frames_written[i]` frames each.

    Slot validity and window-relative positions follow models/kv_cache.py: frame f sits in slot
    f (sink) or sink + (f - sink) % window; held frames get positions 0.. oldest first; the chunk
    follows. So frames_written > sink + window gives a wrapped ring.
    """
    g = torch.Generator().manual_seed(seed)
    slots = sink + window
    valid = torch.zeros(batch, slots, dtype=torch.bool)
    pos = torch.zeros(batch, slots + chunk, dtype=torch.long)
    for i, n in enumerate(frames_written):
        held = list(range(min(n, sink))) + list(range(max(sink, n - window), n))
        for p, f in enumerate(held):
            slot = f if f < sink else sink + (f - sink) % window
            valid[i, slot], pos[i, slot] = True, p
        pos[i, slots:] = torch.arange(len(held), len(held) + chunk)
    lq = chunk * tokens_per_frame

    def rand(*shape):
        t = torch.randn(*shape, generator=g).to(dtype)
        return t.requires_grad_(requires_grad) if requires_grad else t

    rows = torch.tensor(rows if rows is not None else list(range(batch)))
    return StreamCall(
        q=rand(batch, lq, heads, head_dim), k=rand(batch, lq, heads, head_dim), v=rand(batch, lq, heads, head_dim),
        cache_k=torch.randn(max_batch, slots * tokens_per_frame, heads, head_dim, generator=g).to(dtype),
        cache_v=torch.randn(max_batch, slots * tokens_per_frame, heads, head_dim, generator=g).to(dtype),
        rows=rows, slot_valid=valid, rope=rope_tables(pos, head_dim, tokens_per_frame, width, seed), contiguous=None,
    )
