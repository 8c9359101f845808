"""Write a job's frames to an MP4 file (H.264, faststart), atomically.

Frames are written to `<path>.partial` and renamed onto `path` by `finish()`, so a reader (or a
restarted server) never sees a half-written video under the final name.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


class Mp4FileWriter:
    """Append frames chunk by chunk; `finish()` publishes the file, `abort()` removes it."""

    def __init__(self, path: str | Path, *, width: int, height: int, fps: int):
        self.path = Path(path)
        self.partial_path = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.frames_written = 0
        self._container = av.open(str(self.partial_path), "w", format="mp4", options={"movflags": "faststart"})
        self._stream = self._container.add_stream("libx264", rate=fps, options={"preset": "veryfast", "bf": "0"})
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        self._stream.codec_context.time_base = Fraction(1, fps)

    def write(self, frames: np.ndarray) -> None:
        """frames: uint8 [T, H, W, 3]."""
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = self.frames_written
            self._container.mux(self._stream.encode(video_frame))
            self.frames_written += 1

    def finish(self) -> Path:
        """Flush, close and atomically move the file to its final name."""
        self._container.mux(self._stream.encode())
        self._container.close()
        with open(self.partial_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.partial_path, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the partial file."""
        try:
            self._container.close()
        except Exception:  # a container that failed mid-write may not close cleanly
            pass
        self.partial_path.unlink(missing_ok=True)
