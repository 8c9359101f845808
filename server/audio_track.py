"""One stream's audio input on the media timeline: what the client sent, what the model heard, and
what goes into the output video.

The client's PCM pieces (any arrival order, gaps allowed) are placed by their media time into a
bounded window that starts at the *cursor*, the media time up to which the model has been fed.
Before each chunk the engine `take`s the audio up to the chunk's horizon: that span is frozen
(whatever has not arrived by then is silence, and a piece arriving later for it is dropped and
counted), resampled to the model's rate and handed to the model as one contiguous `ChunkInput`.
Once the chunk is made, `output` returns the frozen audio under the chunk's frames, at the
client's rate, for the muxer: the output's audio is exactly what the model heard.

    media time:  0 ...... frozen history ...... cursor ....... window (max_ahead_s) ......|
                 (kept from the oldest chunk      (model fed    (received, not yet fed;   dropped
                  not yet output)                  up to here)   gaps are silence)         beyond

All sizes are bounded: the window by `max_ahead_s`, the history by one chunk plus the horizon.
Not thread-safe: the engine calls every method under its lock.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

from client.protocol.errors import BadRequestError

BYTES_PER_SAMPLE = 2  # pcm_s16le
DEFAULT_MODEL_RATE = 16000  # a model that names no audio rate hears 16 kHz
JOB_AUDIO_RATE = 48000  # a job's uploaded audio is decoded (and muxed) at this rate


def model_audio_rate(info) -> int:
    """The sample rate of the audio a model's streams take (`ModelInfo.audio_sample_rate`, models/audio.py)."""
    return int(info.audio_sample_rate or DEFAULT_MODEL_RATE)


@dataclass(frozen=True)
class AudioFormat:
    """The PCM a client declared (`session.start.audio`) or a decoded upload has."""

    sample_rate: int  # samples per second per channel
    channels: int = 1  # interleaved channels; the track keeps their mean (mono)


class AudioTrack:
    """Received PCM on the media timeline, fed to a model chunk by chunk (see the module doc)."""

    def __init__(self, fmt: AudioFormat, model_rate: int, max_ahead_s: float, start_s: float = 0.0):
        """start_s: media time the track starts at (a resumed stream heard the audio before it: the
        model's own audio buffer holds it; the first `take` feeds the model from here)."""
        self.format = fmt
        self.rate = fmt.sample_rate  # the track's own rate (the client's)
        self.model_rate = model_rate
        self._window = np.zeros(max(1, round(max_ahead_s * self.rate)), np.int16)  # samples from the cursor on
        self.cursor = self.samples(start_s)  # media time (in samples) up to which the model has been fed
        self.received_end = self.cursor  # end of the furthest sample received, in samples
        self.late_samples = 0  # arrived after their span was fed to the model (dropped)
        self.overflow_samples = 0  # arrived beyond the window (dropped)
        self._history = np.zeros(0, np.int16)  # frozen samples from `_history_start` to the cursor
        self._history_start = self.cursor
        self._model_samples = self.cursor * model_rate // self.rate  # the cursor at the model's rate
        self._resampler = self._new_resampler()

    # ---- times ----
    def samples(self, seconds: float) -> int:
        return max(0, round(seconds * self.rate))

    @property
    def received_s(self) -> float:
        """Media time up to which audio has arrived (gaps before it count as silence)."""
        return self.received_end / self.rate

    @property
    def cursor_s(self) -> float:
        return self.cursor / self.rate

    # ---- client side ----
    def put(self, media_time_us: int, pcm: bytes, make_room: bool = False) -> None:
        """Place one piece of s16le PCM (interleaved channels) whose first sample is at
        `media_time_us`. BadRequestError when it is not whole samples. make_room: see `put_samples`."""
        frame_bytes = BYTES_PER_SAMPLE * self.format.channels
        if len(pcm) % frame_bytes:
            raise BadRequestError(f"audio payload of {len(pcm)} bytes is not whole {frame_bytes}-byte samples")
        samples = np.frombuffer(pcm, "<i2").reshape(-1, self.format.channels)  # [N, channels]
        mono = samples[:, 0] if self.format.channels == 1 else samples.mean(axis=1).round().astype(np.int16)  # [N]
        self.put_samples((media_time_us * self.rate + 500_000) // 1_000_000, mono, make_room)  # the nearest sample

    def put_samples(self, start: int, mono: np.ndarray, make_room: bool = False) -> None:
        """Place int16 mono samples `[N]` starting at sample `start` of the media timeline.
        make_room (a paused stream): rather than dropping what lands past the window, move the
        window on and drop the oldest audio not yet fed (the model's own time stays; a resume seeks)."""
        end = start + len(mono)
        over = end - (self.cursor + len(self._window))
        if make_room and over > 0:
            self.seek((self.cursor + over) / self.rate, self._model_samples * 1_000_000 // self.model_rate)
        late = min(max(self.cursor - start, 0), len(mono))
        self.late_samples += late
        start, mono = start + late, mono[late:]
        limit = self.cursor + len(self._window)
        over = min(max(end - limit, 0), len(mono))
        self.overflow_samples += over
        mono = mono[: len(mono) - over]
        if len(mono):
            offset = start - self.cursor
            self._window[offset : offset + len(mono)] = mono
            self.received_end = max(self.received_end, start + len(mono))

    # ---- model side ----
    def take(self, until_s: float) -> tuple[int, bytes]:
        """Freeze the audio up to media time `until_s` (silence where nothing arrived) and return
        (media time in µs of its first sample, s16le mono PCM at the model's rate) of the newly
        frozen span; (time, b"") when the cursor is already there. The spans handed out are
        contiguous at the model's rate from the track's start (`start_s`)."""
        start_us = self._model_samples * 1_000_000 // self.model_rate
        n = min(self.samples(until_s) - self.cursor, len(self._window))
        if n <= 0:
            return start_us, b""
        span = self._window[:n].copy()  # [n] int16
        self._window = np.concatenate([self._window[n:], np.zeros(n, np.int16)])
        self._history = np.concatenate([self._history, span])
        self.cursor += n
        pcm = self._to_model_rate(span)
        self._model_samples += len(pcm) // BYTES_PER_SAMPLE
        return start_us, pcm

    def seek(self, start_s: float, model_time_us: int) -> None:
        """Go on from media time `start_s` (the stream skipped media time: a resume after a pause),
        the next `take` feeding the model from its own media time `model_time_us` (the model's
        timeline has no gap). Audio between the cursor and `start_s` is dropped; audio frozen past
        `start_s` (a look-ahead fed before the pause) is fed again; history before it is not output."""
        start = self.samples(start_s)
        if start >= self.cursor:
            ahead = self._window[min(start - self.cursor, len(self._window)):]
        else:  # [start, cursor) was frozen: what history still holds of it, silence before that
            lost = np.zeros(min(max(self._history_start - start, 0), self.cursor - start), np.int16)
            ahead = np.concatenate([lost, self._history[max(start - self._history_start, 0):], self._window])
        self._window = np.concatenate([ahead, np.zeros(max(len(self._window) - len(ahead), 0), np.int16)])[:len(self._window)]
        self._history, self._history_start = np.zeros(0, np.int16), start
        self.cursor = start
        self._model_samples = model_time_us * self.model_rate // 1_000_000
        self._resampler = self._new_resampler()  # the old one's buffered samples belong before the skip

    def _new_resampler(self) -> av.AudioResampler | None:
        """Track rate -> model rate (stateful across spans), or None when they are the same."""
        if self.model_rate == self.rate:
            return None
        return av.AudioResampler(format="s16", layout="mono", rate=self.model_rate)

    def _to_model_rate(self, span: np.ndarray) -> bytes:
        if self._resampler is None:
            return span.astype("<i2").tobytes()
        frame = av.AudioFrame.from_ndarray(span[None], format="s16", layout="mono")
        frame.sample_rate = self.rate
        out = self._resampler.resample(frame)  # stateful: consecutive spans resample seamlessly
        return b"".join(o.to_ndarray()[0].astype("<i2").tobytes() for o in out)

    # ---- muxer side ----
    def output(self, start_s: float, end_s: float) -> np.ndarray:
        """The frozen audio under media times [start_s, end_s) (int16 mono `[N]` at the track's
        rate, silence where outside what was frozen); history before `start_s` is dropped."""
        start, end = self.samples(start_s), self.samples(end_s)
        out = np.zeros(max(end - start, 0), np.int16)
        lo, hi = max(start, self._history_start), min(end, self._history_start + len(self._history))
        if hi > lo:
            out[lo - start : hi - start] = self._history[lo - self._history_start : hi - self._history_start]
        drop = min(max(start - self._history_start, 0), len(self._history))
        self._history, self._history_start = self._history[drop:], self._history_start + drop
        return out

    @property
    def buffered_samples(self) -> int:
        """Samples held (window + history): bounded by construction."""
        return len(self._window) + len(self._history)
