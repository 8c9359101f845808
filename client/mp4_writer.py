"""Write uint8 RGB frames to an H.264 MP4 file with PyAV (libx264, yuv420p).

A writer can also start with the packets of an MP4 it wrote earlier, copied without re-encoding
(`continue_from`): an extended video keeps its first part bit-exact and costs nothing to stitch.
Given the audio of the whole video (`audio`: int16 mono at `audio_rate`, from media time 0), it
also writes an AAC track, interleaved with the frames and cut (or padded with silence) to the
video's length; a continued video's track is encoded whole from that audio (the copied part's
audio included), so it has no seam.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# libx264's output depends on its thread count, and its default ("auto") follows the cores the
# process may use: the same frames encoded on another machine, or under another CPU affinity,
# decode to frames differing by up to ~16 levels. A fixed count makes every encode reproducible.
X264_THREADS = "4"
AAC_BITRATE = 96_000


class Mp4Writer:
    """Appends frames `[T, H, W, 3]` (or single `[H, W, 3]`) to an MP4 at a fixed fps.

    The frame size is taken from the first frame; odd sizes are padded by one edge pixel because
    yuv420p needs even dimensions. Use as a context manager or call `close()`.
    continue_from: an MP4 written by this class with the same fps and settings; its packets open
    the file unchanged, and frames written after them continue its timeline.
    """

    def __init__(self, path: str | Path, fps: float, crf: int = 20, preset: str = "veryfast",
                 continue_from: str | Path | None = None, audio: np.ndarray | None = None, audio_rate: int = 48000):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self._audio = None if audio is None else np.asarray(audio, np.int16).reshape(-1)  # [N] int16 mono
        self._audio_rate = audio_rate
        self._audio_stream = None
        self._audio_written = 0  # samples encoded so far
        self.path = Path(path)
        self.fps = fps
        self.frames_written = 0
        self._crf = crf
        self._preset = preset
        self._rate = Fraction(self.fps).limit_denominator(1001)
        self._container: av.container.OutputContainer | None = None
        self._stream = None
        self._codec = None  # the libx264 encoder
        self._length_prefixed = False  # the stream's packets are length-prefixed NAL units (copied stream)
        self._size: tuple[int, int] | None = None  # (height, width) of the input frames
        if continue_from is not None:
            self._copy_packets(Path(continue_from))

    def _encoder(self, height: int, width: int):
        codec = av.CodecContext.create("libx264", "w")
        codec.width, codec.height = width + width % 2, height + height % 2
        codec.pix_fmt = "yuv420p"
        codec.time_base, codec.framerate = 1 / self._rate, self._rate
        codec.options = {"crf": str(self._crf), "preset": self._preset, "threads": X264_THREADS}
        return codec

    def _open(self, height: int, width: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w", format="mp4")
        self._stream = self._container.add_stream("libx264", rate=self._rate)
        self._stream.width = width + width % 2
        self._stream.height = height + height % 2
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(self._crf), "preset": self._preset, "threads": X264_THREADS}
        self._codec = self._stream.codec_context
        self._size = (height, width)
        self._add_audio_stream()

    def _add_audio_stream(self) -> None:
        """The AAC track, when the writer has audio (before the first packet is muxed)."""
        if self._audio is not None:
            self._audio_stream = self._container.add_stream("aac", rate=self._audio_rate)
            self._audio_stream.codec_context.layout = "mono"
            self._audio_stream.codec_context.bit_rate = AAC_BITRATE

    def set_audio(self, audio: np.ndarray) -> None:
        """Replace the audio still to be muxed (int16 mono from media time 0; what was already
        encoded stays): a live recording passes the audio sent so far before each write."""
        if self._audio is None:
            raise ValueError("this writer was opened without an audio track")
        self._audio = np.asarray(audio, np.int16).reshape(-1)

    def _write_audio(self, until_s: float) -> None:
        """Encode the audio up to media time `until_s` (silence past its end)."""
        end = round(until_s * self._audio_rate)
        if self._audio_stream is None or end <= self._audio_written:
            return
        samples = np.zeros(end - self._audio_written, np.float32)
        part = self._audio[self._audio_written:end]
        samples[: len(part)] = part / 32768.0
        frame = av.AudioFrame.from_ndarray(samples[None], format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = self._audio_rate, self._audio_written, Fraction(1, self._audio_rate)
        for packet in self._audio_stream.encode(frame):
            self._container.mux(packet)
        self._audio_written = end

    def _copy_packets(self, source: Path) -> None:
        """Open the file with `source`'s video stream and packets (its audio, if any, is not copied:
        the track is encoded from `audio`); our encoder continues after them."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(source)) as src:
            video = src.streams.video[0]
            height, width = video.codec_context.height, video.codec_context.width
            if video.codec_context.name != "h264" or Fraction(video.average_rate or 0) != self._rate:
                raise ValueError(f"{source} is not an H.264 MP4 at {self._rate} fps")
            self._container = av.open(str(self.path), mode="w", format="mp4")
            self._stream = self._container.add_stream_from_template(video)
            self._add_audio_stream()
            for packet in src.demux(video):
                if packet.size:
                    packet.stream = self._stream
                    self._container.mux(packet)
                    self.frames_written += 1
        self._codec = self._encoder(height, width)
        self._length_prefixed = True
        self._size = (height, width)
        self._write_audio(self.frames_written / self.fps)  # the copied frames' audio

    def _mux(self, packets) -> None:
        for packet in packets:
            if self._length_prefixed:  # libx264 emits Annex B; the copied stream stores length-prefixed NALs
                nals = [n for n in re.split(b"\x00\x00\x00\x01|\x00\x00\x01", bytes(packet)) if n]
                converted = av.Packet(b"".join(len(n).to_bytes(4, "big") + n for n in nals))
                converted.pts, converted.dts, converted.time_base = packet.pts, packet.dts, packet.time_base
                converted.is_keyframe = packet.is_keyframe
                packet = converted
            packet.stream = self._stream
            self._container.mux(packet)

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
            video_frame.pts, video_frame.time_base = self.frames_written, 1 / self._rate
            self._mux(self._codec.encode(video_frame))
            self.frames_written += 1
        self._write_audio(self.frames_written / self.fps)

    def close(self) -> None:
        """Flush the encoder and finish the file (no file is written if no frame was)."""
        if self._container is None:
            return
        if self.frames_written:
            self._mux(self._codec.encode(None))
            if self._audio_stream is not None:
                self._write_audio(self.frames_written / self.fps)
                for packet in self._audio_stream.encode(None):
                    self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
