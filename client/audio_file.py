"""Audio files and PCM for avatar sessions and jobs (torch-free; the server decodes uploads with it).

    samples = decode_audio(open("speech.wav", "rb").read(), rate=16000, max_seconds=60)  # int16 mono
    samples, rate = load_audio("speech.wav")                                             # its own rate
    open("copy.wav", "wb").write(wav_bytes(samples, rate))                                # and back

Any format FFmpeg reads (WAV, MP3, OGG/Opus, FLAC, M4A, ...) through PyAV, mixed down to mono and
resampled with FFmpeg's resampler.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from client.protocol.errors import BadRequestError, FramecastError, TooLargeError


def decode_audio(raw: bytes, *, rate: int, max_seconds: float) -> np.ndarray:
    """An audio file (WAV, MP3, OGG, FLAC, ... anything FFmpeg reads) as int16 mono `[N]` at `rate`.
    BadRequestError when it is not decodable audio; TooLargeError past `max_seconds`."""
    pieces: list[np.ndarray] = []
    total = 0
    limit = round(max_seconds * rate)
    try:
        with av.open(io.BytesIO(raw), mode="r") as container:
            if not container.streams.audio:
                raise BadRequestError("field 'audio': the file has no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray()[0])
                    total += out.samples
                if total > limit:
                    raise TooLargeError(f"field 'audio': longer than {max_seconds:g} s")
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray()[0])
    except FramecastError:
        raise
    except Exception:  # PyAV raises many types for data that is not audio
        raise BadRequestError("field 'audio': not a decodable audio file") from None
    if not pieces or sum(len(p) for p in pieces) == 0:
        raise BadRequestError("field 'audio': the file holds no audio")
    return np.concatenate(pieces).astype(np.int16)


def load_audio(source: str | Path | bytes, rate: int | None = None, max_seconds: float = 3600.0) -> tuple[np.ndarray, int]:
    """(int16 mono samples `[N]`, sample rate) of an audio file (path or bytes); `rate`: resample to it
    (default: the file's own rate)."""
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    if rate is None:
        try:
            with av.open(io.BytesIO(raw), mode="r") as container:
                rate = container.streams.audio[0].rate
        except Exception:
            raise BadRequestError("field 'audio': not a decodable audio file") from None
    return decode_audio(raw, rate=rate, max_seconds=max_seconds), rate


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """int16 mono samples `[N]` as a WAV file (PCM s16le)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, "<i2").tobytes())
    return buf.getvalue()


def pcm_pieces(samples: np.ndarray, rate: int, piece_s: float = 0.02) -> Iterator[tuple[int, bytes]]:
    """(media time in µs, s16le bytes) of consecutive `piece_s` pieces of int16 mono `samples`."""
    step = max(1, round(piece_s * rate))
    for start in range(0, len(samples), step):
        yield start * 1_000_000 // rate, np.asarray(samples[start:start + step], "<i2").tobytes()
