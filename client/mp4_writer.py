"""Write uint8 RGB frames to an H.264 MP4 file with PyAV (libx264, yuv420p)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# libx264's output depends on its thread count, and its default ("auto") follows the cores the
# process may use: the same frames encoded on another machine, or under another CPU affinity,
# decode to frames differing by up to ~16 levels. A fixed count makes every encode reproducible.
X264_THREADS = "4"


class Mp4Writer:
    """Appends frames `[T, H, W, 3]` (or single `[H, W, 3]`) to an MP4 at a fixed fps.

    The frame size is taken from the first frame; odd sizes are padded by one edge pixel because
    yuv420p needs even dimensions. Use as a context manager or call `close()`.
    """

    def __init__(self, path: str | Path, fps: float, crf: int = 20, preset: str = "veryfast"):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.fps = fps
        self.frames_written = 0
        self._crf = crf
        self._preset = preset
        self._container: av.container.OutputContainer | None = None
        self._stream = None
        self._size: tuple[int, int] | None = None  # (height, width) of the input frames

    def _open(self, height: int, width: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w", format="mp4")
        rate = Fraction(self.fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width = width + width % 2
        self._stream.height = height + height % 2
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(self._crf), "preset": self._preset, "threads": X264_THREADS}
        self._size = (height, width)

    def write(self, frames: np.ndarray) -> None:
        """Append one frame `[H, W, 3]` or a batch `[T, H, W, 3]` of uint8 RGB."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}")
        if self._container is None:
            self._open(frames.shape[1], frames.shape[2])
        if frames.shape[1:3] != self._size:
            raise ValueError(f"frame size {frames.shape[1:3]} differs from the first frame's {self._size}")
        pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
        if pad_h or pad_w:
            frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in self._stream.encode(video_frame):
                self._container.mux(packet)
            self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (no file is written if no frame was)."""
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
