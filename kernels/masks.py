"""Attention patterns as small named mask_mods, combined with and/or.

A mask_mod is `(b, h, q_idx, kv_idx) -> bool` (True = attend) evaluated on broadcast index
tensors, FlexAttention's convention, so every function here also works as a FlexAttention
`mask_mod` and in `BlockList.from_mask_mod`. Patterns speak about *logical frames*: a
`TokenFrames` gives, for the physical query and key layouts, the latent frame of every token
(-1 for an empty ring slot) and the last frame of each query's chunk. Build one for a training
sequence (`TokenFrames.for_sequence`) or for the rolling cache (`TokenFrames.for_ring`).

The top-k pattern depends on the data (pooled q·k scores), so it builds a `BlockList` directly.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch.nn.attention.flex_attention import and_masks, or_masks

from kernels.block_list import BlockList, MaskMod, assemble_blocks
from kernels.ring_layout import RingLayout, sequence_token_frames

__all__ = [
    "TokenFrames", "and_masks", "or_masks",
    "kv_valid", "block_causal", "sink_frames", "chunk_window", "recent_frames", "spatial_neighbourhood",
    "block_causal_mask", "sink_window_mask", "spatiotemporal_mask", "topk_block_list", "block_causal_block_list",
]


@dataclass(frozen=True)
class TokenFrames:
    """Frame coordinates of the query and key tokens of one attention call."""

    q_frames: torch.Tensor  # [Lq] int64: latent frame of each query token
    q_chunk_end: torch.Tensor  # [Lq] int64: last frame of the chunk the query token belongs to
    kv_frames: torch.Tensor  # [Lk] int64: latent frame of each key token (-1 = empty slot)

    @classmethod
    def for_sequence(cls, num_frames: int, tokens_per_frame: int, chunk_frames: int,
                     device: torch.device | str | None = None, lead_frames: int = 0) -> "TokenFrames":
        """A whole training sequence attending to itself (Lq = Lk = num_frames * tokens_per_frame);
        the first `lead_frames` frames (a start image) form a chunk of their own."""
        frames = sequence_token_frames(num_frames, tokens_per_frame, device)
        after = (frames - lead_frames).clamp_min(0)
        chunk_end = torch.div(after, chunk_frames, rounding_mode="floor") * chunk_frames + chunk_frames - 1 + lead_frames
        chunk_end = torch.where(frames < lead_frames, torch.full_like(frames, lead_frames - 1), chunk_end)
        return cls(frames, chunk_end, frames)

    @classmethod
    def for_ring(cls, layout: RingLayout, frames_written: int,
                 device: torch.device | str | None = None) -> "TokenFrames":
        """The current chunk (starting at frame `frames_written`) attending to the rolling cache."""
        q_frames = layout.q_token_frames(frames_written, device)
        chunk_end = torch.full_like(q_frames, frames_written + layout.chunk_frames - 1)
        return cls(q_frames, chunk_end, layout.kv_token_frames(frames_written, device))


# ---- primitive mask_mods ----------------------------------------------------------------------

def kv_valid(tf: TokenFrames) -> MaskMod:
    """Keys in slots that hold a frame."""
    def mod(b, h, q_idx, kv_idx):
        return tf.kv_frames[kv_idx] >= 0
    return mod


def block_causal(tf: TokenFrames) -> MaskMod:
    """Keys in the query's chunk or an earlier one (bidirectional inside a chunk)."""
    def mod(b, h, q_idx, kv_idx):
        return tf.kv_frames[kv_idx] <= tf.q_chunk_end[q_idx]
    return mod


def sink_frames(tf: TokenFrames, num_frames: int) -> MaskMod:
    """Keys of the first `num_frames` frames of the stream (the attention sink)."""
    def mod(b, h, q_idx, kv_idx):
        f = tf.kv_frames[kv_idx]
        return (f >= 0) & (f < num_frames)
    return mod


def chunk_window(tf: TokenFrames, window_frames: int) -> MaskMod:
    """Keys of the last `window_frames` frames up to the end of the query's chunk (chunk included)."""
    def mod(b, h, q_idx, kv_idx):
        return tf.kv_frames[kv_idx] > tf.q_chunk_end[q_idx] - window_frames
    return mod


def recent_frames(tf: TokenFrames, num_frames: int) -> MaskMod:
    """Keys less than `num_frames` frames before the query's own frame (or after it)."""
    def mod(b, h, q_idx, kv_idx):
        return tf.kv_frames[kv_idx] > tf.q_frames[q_idx] - num_frames
    return mod


def spatial_neighbourhood(tokens_per_frame: int, frame_width: int, radius: int) -> MaskMod:
    """Keys within `radius` tokens of the query's (row, column) in its frame, any frame.

    Both layouts are frame-aligned (every slot and every chunk frame starts at a multiple of
    `tokens_per_frame`), so a token's in-frame position is `idx % tokens_per_frame`.
    """
    def mod(b, h, q_idx, kv_idx):
        qp, kp = q_idx % tokens_per_frame, kv_idx % tokens_per_frame
        dy = qp // frame_width - kp // frame_width
        dx = qp % frame_width - kp % frame_width
        return (dy.abs() <= radius) & (dx.abs() <= radius)
    return mod


# ---- named patterns ---------------------------------------------------------------------------

def block_causal_mask(tf: TokenFrames) -> MaskMod:
    """Training: every chunk attends to itself and all earlier chunks."""
    return and_masks(kv_valid(tf), block_causal(tf))


def sink_window_mask(tf: TokenFrames, sink: int, window_frames: int) -> MaskMod:
    """Sink frames plus a per-chunk window of the last `window_frames` frames (chunk included).

    Over the ring (`TokenFrames.for_ring`) this handles wrap-around for free: frames are looked
    up per slot, wherever the ring put them.
    """
    return and_masks(kv_valid(tf), block_causal(tf), or_masks(sink_frames(tf, sink), chunk_window(tf, window_frames)))


def spatiotemporal_mask(tf: TokenFrames, tokens_per_frame: int, frame_width: int, radius: int,
                        recent: int) -> MaskMod:
    """Everything in the `recent` frames before a token; only its spatial neighbourhood
    (|dy|, |dx| <= radius) in more distant frames."""
    return and_masks(
        kv_valid(tf), block_causal(tf),
        or_masks(recent_frames(tf, recent), spatial_neighbourhood(tokens_per_frame, frame_width, radius)),
    )


@functools.lru_cache(maxsize=8)
def block_causal_block_list(num_frames: int, tokens_per_frame: int, chunk_frames: int,
                            device: torch.device | str | None = None, block: int = 128, lead_frames: int = 0) -> BlockList:
    """The training pattern of a whole sequence as a BlockList, built once per shape and device.

    Tiles below the chunk diagonal are full, tiles above it are skipped, only tiles that straddle
    a chunk boundary carry a token mask; so the Triton kernel / FlexAttention never visit the
    masked upper half (about half the work at 7 chunks), where a dense mask computes it all.
    """
    tf = TokenFrames.for_sequence(num_frames, tokens_per_frame, chunk_frames, device, lead_frames)
    length = num_frames * tokens_per_frame
    return BlockList.from_mask_mod(block_causal_mask(tf), length, length, block_q=block, block_kv=block,
                                   device=device)


# ---- data-dependent pattern -------------------------------------------------------------------

def _pool_blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    """Mean over each block of `block` tokens (ragged tail: its real tokens). [B, H, L, D] -> [B, H, N, D]."""
    b, h, length, d = x.shape
    n = -(-length // block)
    padded = x.new_zeros(b, h, n * block, d, dtype=torch.float32)
    padded[:, :, :length] = x.float()
    counts = torch.full((n,), float(block), device=x.device)
    counts[-1] = length - (n - 1) * block
    return padded.view(b, h, n, block, d).sum(3) / counts.view(1, 1, n, 1)


def topk_block_list(q: torch.Tensor, k: torch.Tensor, keep_fraction: float | None = None,
                    keep_blocks: int | None = None, base: BlockList | None = None,
                    block_q: int = 128, block_kv: int = 128) -> BlockList:
    """Per (batch, head, query block) keep the kv blocks with the highest pooled q·k score.

    q: [B, H, Lq, D]; k: [B, H, Lk, D]. Keeps `keep_blocks` blocks, or ceil(keep_fraction x
    num_kv_blocks), chosen only among the blocks `base` visits (default: all); kept blocks keep
    their class in `base` (full, or partial with base's tile).
    """
    if (keep_fraction is None) == (keep_blocks is None):
        raise ValueError("give exactly one of keep_fraction and keep_blocks")
    batch, heads, q_len, _ = q.shape
    kv_len = k.shape[2]
    base = base if base is not None else BlockList.dense(q_len, kv_len, block_q, block_kv, q.device)
    if (base.block_q, base.block_kv, base.q_len, base.kv_len) != (block_q, block_kv, q_len, kv_len):
        raise ValueError("base block list does not match q/k shapes and block sizes")
    nkv = base.num_kv_blocks
    n_keep = keep_blocks if keep_blocks is not None else math.ceil(keep_fraction * nkv)
    n_keep = max(1, min(nkv, n_keep))
    codes = base.block_codes().expand(batch, heads, -1, -1)  # [B, H, NQ, NKV]
    allowed = codes != -2
    scores = torch.einsum("bhqd,bhkd->bhqk", _pool_blocks(q, block_q), _pool_blocks(k, block_kv))  # [B, H, NQ, NKV]
    scores = scores.masked_fill(~allowed, float("-inf"))
    top = scores.topk(n_keep, dim=-1).indices
    chosen = torch.zeros_like(allowed).scatter_(-1, top, True) & allowed
    return assemble_blocks(chosen & (codes == -1), chosen & (codes >= 0), codes.clamp(min=0).to(torch.int32),
                     base.tiles, q_len, kv_len, block_q, block_kv)
