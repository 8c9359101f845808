"""Chunk encoders: uint8 frames [T, H, W, 3] -> the payload of one binary chunk message.

- JPEG: T × (u32 little-endian length, JPEG bytes), Pillow.
- fMP4: one fragment (moof + mdat) per chunk, H.264 (libx264, zerolatency, no B-frames) starting
  with a keyframe; the first chunk is preceded by the init segment (ftyp + moov). A session with
  audio input gets a second track (AAC, track 2): each fragment also carries the audio under the
  chunk's frames, both tracks on the media timeline, so a player plays them in sync.

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
from server.audio_encode import AUDIO_CODEC, AacEncoder
from server.mp4_boxes import restamp_fragment, split_init_and_fragment, track_timescales

FMP4_MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof+skip_trailer"  # one fragment, no mfra
# low latency, no B-frames; a fixed thread count so the same frames give the same bytes anywhere
X264_OPTIONS = {"tune": "zerolatency", "preset": "ultrafast", "bf": "0", "threads": X264_THREADS}


class JpegChunkEncoder:
    """Each frame as a JPEG, length-prefixed."""

    format = "jpeg"

    def __init__(self, quality: int = 85):
        self.quality = quality

    def encode(self, frames: np.ndarray, first_frame_index: int, audio: np.ndarray | None = None) -> bytes:
        """frames: uint8 [T, H, W, 3] (JPEG chunks carry no audio: a client plays its own, by media time)."""
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

    def __init__(self, fps: int, audio_rate: int | None = None):
        self.fps = fps
        self.sequence_number = 0  # fragments emitted so far
        self.audio = AacEncoder(audio_rate) if audio_rate else None  # track 2, one encoder for the session

    def _mux(self, frames: np.ndarray, audio_packets: list) -> bytes:
        """One complete fMP4 file (ftyp, moov, moof, mdat) of frames [T, H, W, 3] starting at 0,
        plus the audio packets (already encoded, stamped from 0) when the session has audio."""
        buf = io.BytesIO()
        with av.open(buf, "w", format="mp4", options={"movflags": FMP4_MOVFLAGS}) as container:
            stream = container.add_stream("libx264", rate=self.fps, options={**X264_OPTIONS, "g": str(len(frames))})
            stream.height, stream.width = frames.shape[1], frames.shape[2]
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = Fraction(1, self.fps)
            audio_stream = None
            if self.audio is not None:
                audio_stream = container.add_stream(AUDIO_CODEC, rate=self.audio.rate)
                audio_stream.codec_context.layout = "mono"
                audio_stream.codec_context.extradata = self.audio.extradata
            for i, frame in enumerate(frames):
                video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
                video_frame.pts = i
                container.mux(stream.encode(video_frame))
            container.mux(stream.encode())
            for packet in audio_packets:
                packet.stream = audio_stream
                container.mux(packet)
        return buf.getvalue()

    def _audio_packets(self, audio: np.ndarray | None, first_frame_index: int, frames: int) -> tuple[list, int]:
        """(this chunk's AAC packets restamped to start at 0, their decode time on the track's
        timeline = the media time of their first sample). The encoder's priming packet (before
        media time 0) is left out, so sample s of the track plays at s / rate like frame f at f / fps."""
        if self.audio is None:
            return [], 0
        if audio is None:  # nothing came with the chunk: its span is silence
            audio = np.zeros(round(frames / self.fps * self.audio.rate), np.int16)
        packets = [p for p in self.audio.encode(audio, first_frame_index / self.fps) if p.dts >= 0]
        if not packets:
            return [], 0
        base = packets[0].dts
        for packet in packets:
            packet.pts, packet.dts = packet.pts - base, packet.dts - base
        return packets, base

    def encode(self, frames: np.ndarray, first_frame_index: int, audio: np.ndarray | None = None) -> bytes:
        """frames: uint8 [T, H, W, 3]; audio: int16 mono [N] under them (sessions with audio).
        Returns init + fragment for the first call, else a fragment."""
        packets, audio_time = self._audio_packets(audio, first_frame_index, len(frames))
        data = self._mux(frames, packets)
        init, fragment = split_init_and_fragment(data)
        scales = track_timescales(data)
        self.sequence_number += 1
        times = {1: first_frame_index * (scales[1] // self.fps), 2: audio_time}
        fragment = restamp_fragment(fragment, sequence_number=self.sequence_number, decode_time=times)
        return init + fragment if self.sequence_number == 1 else fragment


def make_encoder(fmt: str, *, fps: int, jpeg_quality: int = 85,
                 audio_rate: int | None = None) -> JpegChunkEncoder | Fmp4ChunkEncoder:
    """The encoder for a protocol format name ("jpeg" or "fmp4"); fMP4 muxes mono audio at
    `audio_rate` when given."""
    if fmt == "jpeg":
        return JpegChunkEncoder(jpeg_quality)
    if fmt == "fmp4":
        return Fmp4ChunkEncoder(fps, audio_rate)
    raise ValueError(f"unknown format {fmt!r}")
