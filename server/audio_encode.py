"""AAC encoding of a stream's audio, chunk by chunk, on one continuous timeline.

One encoder per stream lives as long as the stream (a fresh AAC encoder per chunk would restart
its priming and overlap at every chunk boundary: audible clicks and a drift). It takes the int16
mono audio under each chunk's frames and returns the AAC packets completed so far, each stamped
with its decode time on the track's timeline (samples since media time 0; the encoder's priming
packet sits at -PRIMING and is cut by the edit list the MP4 muxer writes). A chunk that never
reached the encoder (dropped for a slow client) is filled with silence, so audio and video stay
on one clock.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

AUDIO_CODEC = "aac"  # FFmpeg's native AAC-LC encoder; browsers' MediaSource plays mp4a.40.2
AUDIO_BITRATE = 64_000


class AacEncoder:
    """int16 mono `[N]` in, AAC packets out, continuous across calls."""

    def __init__(self, sample_rate: int):
        self.rate = sample_rate
        self.codec = av.CodecContext.create(AUDIO_CODEC, "w")
        self.codec.sample_rate = sample_rate
        self.codec.layout = "mono"
        self.codec.format = "fltp"
        self.codec.bit_rate = AUDIO_BITRATE
        self.codec.time_base = Fraction(1, sample_rate)
        self.codec.open()
        self.samples_in = 0  # samples fed so far = the media time (in samples) of the next one

    @property
    def extradata(self) -> bytes:
        """The AudioSpecificConfig a container's `esds` needs."""
        return self.codec.extradata

    def encode(self, samples: np.ndarray, start_s: float) -> list[av.Packet]:
        """Encode the audio starting at media time `start_s` (silence fills a gap since the last
        call; audio before what was already encoded is cut). Returns the packets completed."""
        start = round(start_s * self.rate)
        if start > self.samples_in:  # a chunk never came: its span is silence
            samples = np.concatenate([np.zeros(start - self.samples_in, np.int16), samples])
        elif start < self.samples_in:
            samples = samples[self.samples_in - start:]
        if not len(samples):
            return []
        frame = av.AudioFrame.from_ndarray((samples.astype(np.float32) / 32768.0)[None], format="fltp", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self.samples_in
        frame.time_base = Fraction(1, self.rate)
        self.samples_in += len(samples)
        return list(self.codec.encode(frame))

    def flush(self) -> list[av.Packet]:
        """The packets still in the encoder (the end of the stream)."""
        return list(self.codec.encode(None))
