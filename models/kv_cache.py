"""The rolling KV cache: a preallocated ring buffer per layer for `max_batch` independent streams.

Physical layout of one row (one stream), in latent-frame slots of `tokens_per_frame` tokens:

    [ sink slots (sink_frames) | window ring slots (window_frames) ]

Frame f of a stream lives in slot f if f < sink_frames, else in sink + (f - sink) % window:
eviction overwrites the oldest window slot; nothing is ever copied or shifted. Keys are stored
**before** RoPE. Each attention pass rotates them to window-relative positions (sink frames
0..S-1, window frames S.. in age order, the current chunk after them), so positions stay
bounded and a stream has no length ceiling.

The host keeps one integer per row (frames committed); every per-pass index tensor is derived
from those integers in `plan()` without reading device memory, so the forward pass never syncs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels.ring_layout import RingLayout
from models.config import ModelConfig


@dataclass
class CachePlan:
    """Where a chunk of `chunk_len` frames sits relative to the cache, for a list of rows."""

    rows: torch.Tensor  # [B] long: cache rows taking part in this pass
    key_positions: torch.Tensor  # [B, slots] long: window-relative frame position of each cache slot
    key_valid: torch.Tensor  # [B, slots] bool: slot holds a frame the chunk may attend to
    query_positions: torch.Tensor  # [B, chunk_len] long: frame positions of the chunk's frames
    write_slots: torch.Tensor  # [B, chunk_len] long: slots the chunk's K/V go to when committed
    contiguous: slice | None  # the same rows as a slice when they are consecutive (no gather copy)
    key_local: torch.Tensor | None = None  # [B, slots] bool: slot attended only near each query (locality option)
    video_start: torch.Tensor | None = None  # [B, chunk_len] bool: the frame is its video's first latent frame


class RollingKVCache:
    """Self-attention K/V ring buffers for every layer, plus the clean latents of cached frames."""

    def __init__(self, cfg: ModelConfig, max_batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        t, s = cfg.transformer, cfg.stream
        self.layout = RingLayout.from_config(cfg)  # slot arithmetic, shared with the attention kernels
        self.sink = s.sink_frames
        self.window = s.window_frames
        self.slots = self.sink + self.window
        self.tokens_per_frame = cfg.tokens_per_frame
        self.max_batch = max_batch
        shape = (max_batch, self.slots * self.tokens_per_frame, t.num_attention_heads, t.attention_head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(t.num_layers)]  # [Bmax, S*T, H, D]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(t.num_layers)]
        # clean latents of cached frames, for re-caching the window under a new prompt
        self.latents = torch.zeros(
            (max_batch, t.in_channels, self.slots, cfg.latent_height, cfg.latent_width), device=device, dtype=dtype
        )  # [Bmax, C, slots, h, w]
        self.frames = [0] * max_batch  # frames committed per row (host ints)
        # whether a row's frame 0 is its video's first latent frame (the VAE's start code): False where a re-cache
        # switch commits the newest old frames afresh as a row's first frames, mid-video
        self.starts_video = [True] * max_batch
        self.local_radius = s.local_radius  # None: dense over the window
        self.local_recent = s.local_recent_frames
        self.device = torch.device(device)

    # ---------------------------------------------------------------- slot arithmetic (host)
    def slot_of(self, frame: int) -> int:
        return self.layout.slot_of_frame(frame)

    def cached_frames(self, row: int) -> list[int]:
        """Frame numbers held by a row, oldest first (the sink, then the window)."""
        n = self.frames[row]
        sink = list(range(min(n, self.sink)))
        window = list(range(max(self.sink, n - self.window), n))
        return sink + window

    def plan(self, rows: list[int], chunk_len: int) -> CachePlan:
        """Plan the next `chunk_len` frames of each row (the frames after those committed)."""
        pos = torch.zeros(len(rows), self.slots, dtype=torch.long)
        valid = torch.zeros(len(rows), self.slots, dtype=torch.bool)
        qpos = torch.zeros(len(rows), chunk_len, dtype=torch.long)
        write = torch.zeros(len(rows), chunk_len, dtype=torch.long)
        local = torch.zeros(len(rows), self.slots, dtype=torch.bool)
        start = torch.zeros(len(rows), chunk_len, dtype=torch.bool)
        for i, row in enumerate(rows):
            held = self.cached_frames(row)
            n = self.frames[row]
            for p, frame in enumerate(held):
                slot = self.slot_of(frame)
                pos[i, slot], valid[i, slot] = p, True
                local[i, slot] = frame >= self.sink and frame < n - self.local_recent
            qpos[i] = torch.arange(len(held), len(held) + chunk_len)
            write[i] = torch.tensor([self.slot_of(n + j) for j in range(chunk_len)])
            start[i, 0] = n == 0 and self.starts_video[row]
        return self._to_device(rows, pos, valid, qpos, write, local if self.local_radius is not None else None, start)

    def replay_plan(self, row: int, frames: list[int], upto: int) -> CachePlan:
        """Plan for re-computing `frames` (already cached, oldest first) of one row, where the
        first `upto` of the held frames have been recomputed already: they are the only context."""
        held = self.cached_frames(row)
        pos = torch.zeros(1, self.slots, dtype=torch.long)
        valid = torch.zeros(1, self.slots, dtype=torch.bool)
        for p, frame in enumerate(held[:upto]):
            slot = self.slot_of(frame)
            pos[0, slot], valid[0, slot] = p, True
        qpos = torch.tensor([[held.index(f) for f in frames]])
        write = torch.tensor([[self.slot_of(f) for f in frames]])
        start = torch.tensor([[f == 0 and self.starts_video[row] for f in frames]])
        return self._to_device([row], pos, valid, qpos, write, None, start)

    def _to_device(self, rows, pos, valid, qpos, write, local=None, start=None) -> CachePlan:
        contiguous = slice(rows[0], rows[-1] + 1) if rows == list(range(rows[0], rows[-1] + 1)) else None
        dev = self.device
        return CachePlan(
            rows=torch.tensor(rows, dtype=torch.long).to(dev, non_blocking=True),
            key_positions=pos.to(dev, non_blocking=True),
            key_valid=valid.to(dev, non_blocking=True),
            query_positions=qpos.to(dev, non_blocking=True),
            write_slots=write.to(dev, non_blocking=True),
            contiguous=contiguous,
            key_local=local.to(dev, non_blocking=True) if local is not None else None,
            video_start=start.to(dev, non_blocking=True) if start is not None and start.any() else None,
        )

    # ---------------------------------------------------------------- device tensors
    def ring(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's whole K, V ring buffers [Bmax, slots*T, H, D] (for kernels that read rows in place)."""
        return self.k[layer], self.v[layer]

    def _token_index(self, plan: CachePlan) -> torch.Tensor:
        t = self.tokens_per_frame
        offs = torch.arange(t, device=plan.write_slots.device)
        return (plan.write_slots[:, :, None] * t + offs).flatten(1)  # [B, chunk_len*T]

    def write(self, layer: int, plan: CachePlan, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store a chunk's K/V [B, chunk_len*T, H, D] into its slots (overwriting evicted frames)."""
        idx = self._token_index(plan)
        rows = plan.rows[:, None].expand_as(idx)
        self.k[layer][rows, idx] = k.detach().to(self.k[layer].dtype)
        self.v[layer][rows, idx] = v.detach().to(self.v[layer].dtype)

    def write_latents(self, plan: CachePlan, x0: torch.Tensor) -> None:
        """Keep the clean latents [B, C, chunk_len, h, w] of committed frames."""
        for i in range(x0.shape[2]):
            self.latents[plan.rows, :, plan.write_slots[:, i]] = x0[:, :, i].detach().to(self.latents.dtype)

    def advance(self, rows: list[int], n: int) -> None:
        for row in rows:
            self.frames[row] += n

    def reset(self, row: int, starts_video: bool = True) -> None:
        """Forget a row's frames (its buffers are simply overwritten later); its next frame starts a video (a new
        stream, a scene cut), or with `starts_video` False is a frame mid-video (`recache_frames`)."""
        self.frames[row] = 0
        self.starts_video[row] = starts_video

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v) + self.latents.numel() * self.latents.element_size()
