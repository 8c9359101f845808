"""Where each latent frame lives in the physical rolling KV cache.

Physical layout along the key axis, one slot = one latent frame of `tokens_per_frame` tokens:

    [ sink slots (sink_frames) | window ring slots (window_frames) | current-chunk slots (chunk_frames) ]

Frame f < sink_frames sits in sink slot f. A later clean frame f sits in ring slot
`sink_frames + (f - sink_frames) % window_frames`, overwriting the frame `window_frames` before it
(eviction without copies). The chunk being denoised (frames `frames_written ..`) sits in the chunk
slots. Attention is permutation-invariant over keys (RoPE positions travel with each slot), so
the physical order never has to be restored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RingLayout:
    """Sizes of the rolling cache (taken from `StreamConfig` and the model's tokens per frame)."""

    sink_frames: int
    window_frames: int
    chunk_frames: int
    tokens_per_frame: int

    @classmethod
    def from_config(cls, cfg) -> "RingLayout":
        """From a `models.config.ModelConfig`."""
        s = cfg.stream
        return cls(s.sink_frames, s.window_frames, s.chunk_frames, cfg.tokens_per_frame)

    @property
    def num_slots(self) -> int:
        return self.sink_frames + self.window_frames + self.chunk_frames

    @property
    def kv_len(self) -> int:
        return self.num_slots * self.tokens_per_frame

    @property
    def q_len(self) -> int:
        """Query tokens of one chunk."""
        return self.chunk_frames * self.tokens_per_frame

    def slot_of_frame(self, frame: int) -> int:
        """Ring slot a clean frame is written to."""
        if frame < self.sink_frames:
            return frame
        return self.sink_frames + (frame - self.sink_frames) % self.window_frames

    def slot_frames(self, frames_written: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Logical frame held by each slot [num_slots] int64 (-1 = empty) while the chunk that
        starts at frame `frames_written` is denoised."""
        s, w = self.sink_frames, self.window_frames
        sink = torch.arange(s, device=device)
        sink = torch.where(sink < frames_written, sink, -1)
        j = torch.arange(w, device=device)
        # newest frame f = s + j + n * w with f < frames_written (n >= 0)
        n = torch.div(frames_written - 1 - s - j, w, rounding_mode="floor")
        ring = torch.where(n >= 0, s + j + n * w, -1)
        chunk = frames_written + torch.arange(self.chunk_frames, device=device)
        return torch.cat([sink, ring, chunk])

    def kv_token_frames(self, frames_written: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Logical frame of every key token [kv_len] int64 (-1 = empty slot)."""
        return self.slot_frames(frames_written, device).repeat_interleave(self.tokens_per_frame)

    def q_token_frames(self, frames_written: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Logical frame of every query token of the current chunk [q_len] int64."""
        frames = frames_written + torch.arange(self.chunk_frames, device=device)
        return frames.repeat_interleave(self.tokens_per_frame)

    def kv_valid(self, frames_written: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Key-validity mask [1, 1, 1, kv_len] bool: slots that hold a frame."""
        return (self.kv_token_frames(frames_written, device) >= 0).view(1, 1, 1, -1)


def sequence_token_frames(num_frames: int, tokens_per_frame: int,
                          device: torch.device | str | None = None) -> torch.Tensor:
    """Logical frame of every token of a whole (training) sequence laid out frame by frame [L]."""
    return torch.arange(num_frames, device=device).repeat_interleave(tokens_per_frame)
