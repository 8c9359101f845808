"""Chunk encoders: uint8 frames [T, H, W, 3] -> the payload of one binary chunk message.

- JPEG: T × (u32 little-endian length, JPEG bytes), Pillow.
- fMP4: one fragment (moof + mdat) per chunk, H.264 (libx264, zerolatency, no B-frames) starting
  with a keyframe; the first chunk is preceded by the init segment (ftyp + moov).

Encoders are stateful per session (fMP4 keeps the timeline) and not thread-safe: the session
calls `encode` for its chunks one at a time, in order, on a worker thread.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
from PIL import Image

from client.mp4_writer import X264_THREADS
from client.protocol.chunks import pack_jpeg_payload
from server.mp4_boxes import media_timescale, restamp_fragment, split_init_and_fragment

FMP4_MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof+skip_trailer"  # one fragment, no mfra
# low latency, no B-frames; a fixed thread count so the same frames give the same bytes anywhere
X264_OPTIONS = {"tune": "zerolatency", "preset": "ultrafast", "bf": "0", "threads": X264_THREADS}


class JpegChunkEncoder:
    """Each frame as a JPEG, length-prefixed."""

    format = "jpeg"

    def __init__(self, quality: int = 85):
        self.quality = quality

    def encode(self, frames: np.ndarray, first_frame_index: int) -> bytes:
        """frames: uint8 [T, H, W, 3]."""
        jpegs = []
        for frame in frames:  # [H, W, 3]
            buf = io.BytesIO()
            Image.fromarray(frame).save(buf, format="JPEG", quality=self.quality)
            jpegs.append(buf.getvalue())
        return pack_jpeg_payload(jpegs)


class Fmp4ChunkEncoder:
    """H.264 fragmented MP4, a self-contained fragment per chunk starting at a keyframe.

    Each chunk is muxed by a fresh container so its fragment is complete as soon as the chunk is
    encoded (a long-lived muxer only emits a fragment when the *next* keyframe arrives: one chunk
    of latency); fragments are then restamped onto one continuous timeline.
    """

    format = "fmp4"

    def __init__(self, fps: int):
        self.fps = fps
        self.sequence_number = 0  # fragments emitted so far

    def _mux(self, frames: np.ndarray) -> bytes:
        """One complete fMP4 file (ftyp, moov, moof, mdat) of frames [T, H, W, 3] starting at 0."""
        buf = io.BytesIO()
        with av.open(buf, "w", format="mp4", options={"movflags": FMP4_MOVFLAGS}) as container:
            stream = container.add_stream("libx264", rate=self.fps, options={**X264_OPTIONS, "g": str(len(frames))})
            stream.height, stream.width = frames.shape[1], frames.shape[2]
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = Fraction(1, self.fps)
            for i, frame in enumerate(frames):
                video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
                video_frame.pts = i
                container.mux(stream.encode(video_frame))
            container.mux(stream.encode())
        return buf.getvalue()

    def encode(self, frames: np.ndarray, first_frame_index: int) -> bytes:
        """frames: uint8 [T, H, W, 3]; returns init + fragment for the first call, else a fragment."""
        data = self._mux(frames)
        init, fragment = split_init_and_fragment(data)
        ticks_per_frame = media_timescale(data) // self.fps
        self.sequence_number += 1
        fragment = restamp_fragment(
            fragment, sequence_number=self.sequence_number, decode_time=first_frame_index * ticks_per_frame
        )
        return init + fragment if self.sequence_number == 1 else fragment


def make_encoder(fmt: str, *, fps: int, jpeg_quality: int = 85) -> JpegChunkEncoder | Fmp4ChunkEncoder:
    """The encoder for a protocol format name ("jpeg" or "fmp4")."""
    if fmt == "jpeg":
        return JpegChunkEncoder(jpeg_quality)
    if fmt == "fmp4":
        return Fmp4ChunkEncoder(fps)
    raise ValueError(f"unknown format {fmt!r}")
