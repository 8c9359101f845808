"""Write a job's frames to an MP4 file atomically (the encoding itself is client.mp4_writer's).

Frames go to a partial file unique to this writer (`<name>.<random>.partial`) and are renamed onto
`path` by `finish()`, so a reader (or a restarted server) never sees a half-written video under
the final name, and two workers that both think they own a job never delete each other's file.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from client.mp4_writer import Mp4Writer


class Mp4FileWriter:
    """Append frames chunk by chunk; `finish()` publishes the file, `abort()` removes it."""

    def __init__(self, path: str | Path, *, width: int, height: int, fps: int, continue_from: Path | None = None,
                 audio: np.ndarray | None = None, audio_rate: int = 48000):
        """continue_from: a video this class wrote, whose packets open the new file unchanged;
        audio: int16 mono `[N]` at `audio_rate`, muxed under the frames (cut to their length)."""
        self.path = Path(path)
        self.partial_path = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex[:8]}.partial")
        self.size = (height, width)
        self._writer = Mp4Writer(self.partial_path, fps=fps, preset="veryfast", continue_from=continue_from,
                                 audio=audio, audio_rate=audio_rate)

    @property
    def frames_written(self) -> int:
        return self._writer.frames_written

    def write(self, frames: np.ndarray) -> None:
        """frames: uint8 [T, H, W, 3] of the size given at construction."""
        if frames.shape[1:3] != self.size:
            raise ValueError(f"frame size {frames.shape[1:3]} != {self.size}")
        self._writer.write(frames)

    def finish(self) -> Path:
        """Flush, close and atomically move the file to its final name."""
        self._writer.close()
        with open(self.partial_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.partial_path, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete this writer's partial file."""
        try:
            self._writer.close()
        except Exception:  # a container that failed mid-write may not close cleanly
            pass
        self.partial_path.unlink(missing_ok=True)


def remove_stale_partials(directory: Path, older_than_s: float = 0.0) -> int:
    """Delete `*.partial` files left by writers that died (kill -9 mid-job) and were not modified
    for `older_than_s` seconds (0: all; a live writer in another process touches its file every
    chunk). Returns how many were removed."""
    import time

    removed = 0
    cutoff = time.time() - older_than_s
    for path in Path(directory).glob("*.partial"):
        try:
            if path.stat().st_mtime <= cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # another process removed or published it meanwhile
            pass
    return removed
