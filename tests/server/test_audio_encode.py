"""`server.audio_encode.AacEncoder`: one AAC encoder per stream, fed chunk by chunk on one media
timeline. Its packets are decoded with FFmpeg's own AAC decoder (PyAV), configured only from the
encoder's `extradata`, and placed by their own timestamps."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from server.audio_encode import AacEncoder
from tests.server.test_avatar_job_continue import loud_spans, tone

RATE = 16000
FRAME = 1024  # samples per AAC-LC frame (and the encoder's priming)


def encode(pieces: list[tuple[float, np.ndarray]], rate: int = RATE) -> tuple[AacEncoder, list[av.Packet]]:
    """A fresh encoder fed (start_s, int16 samples) pieces in order, then flushed."""
    enc = AacEncoder(rate)
    packets = [p for start_s, samples in pieces for p in enc.encode(samples, start_s)]
    return enc, packets + enc.flush()


def decode(enc: AacEncoder, packets: list[av.Packet]) -> np.ndarray:
    """float32 mono from media time 0: each decoded frame placed at its pts, the priming dropped."""
    decoder = av.CodecContext.create("aac", "r")
    decoder.extradata = enc.extradata  # all a container's `esds` gives a player
    frames = [f for p in [*packets, None] for f in decoder.decode(p)]
    assert (decoder.sample_rate, decoder.layout.name) == (enc.rate, "mono")
    out = np.zeros(max(f.pts + f.samples for f in frames), np.float32)
    for f in frames:
        if f.pts >= 0:
            out[f.pts:f.pts + f.samples] = f.to_ndarray()[0]
    return out


def as_bytes(packets: list[av.Packet]) -> list[tuple[int, bytes]]:
    return [(p.pts, bytes(p)) for p in packets]


def test_chunks_make_one_continuous_track():
    """Three chunks encode to exactly the packets of the whole audio at once (no restarted priming
    at a chunk boundary), the priming packet sits at -1024, and the decoded track is the input."""
    x = tone(1.0, 0.3, 0.6, RATE)
    whole_enc, whole = encode([(0.0, x)])
    enc, chunked = encode([(0.0, x[:4000]), (0.25, x[4000:8000]), (0.5, x[8000:])])
    assert enc.samples_in == len(x)
    assert as_bytes(chunked) == as_bytes(whole)
    assert chunked[0].pts == chunked[0].dts == -FRAME
    assert all(p.time_base == Fraction(1, RATE) for p in chunked)
    assert [p.pts for p in chunked[1:]] == list(range(0, len(x), FRAME))
    y = decode(enc, chunked)[:len(x)]
    assert np.corrcoef(y, x)[0, 1] > 0.999  # not shifted by a frame, not a different signal
    assert abs(np.abs(y).max() - 20000 / 32768) < 0.03  # int16 full scale is 1.0
    [(on, off)] = loud_spans((y * 32767).astype(np.int16), RATE)
    assert abs(on - 0.3) < 0.002 and abs(off - 0.6) < 0.002


def test_a_missing_chunk_is_silence_on_the_same_clock():
    """A chunk that never reached the encoder (0.25-0.5 s) becomes silence: the next chunk's tone
    still plays at its own media time."""
    x = tone(1.0, 0.6, 0.8, RATE)
    enc, got = encode([(0.0, x[:4000]), (0.5, x[8000:])])
    assert enc.samples_in == len(x)
    expected = x.copy()
    expected[4000:8000] = 0
    assert as_bytes(got) == as_bytes(encode([(0.0, expected)])[1])
    [(on, off)] = loud_spans((decode(enc, got) * 32767).astype(np.int16), RATE)
    assert abs(on - 0.6) < 0.002 and abs(off - 0.8) < 0.002


def test_audio_already_encoded_is_cut():
    """A chunk that starts before the audio already encoded keeps only its new part; one wholly
    before it adds nothing."""
    first = tone(0.5, 0.1, 0.2, RATE)
    second = tone(0.5, 0.0, 0.5, RATE)  # loud all through: its first half (0.25-0.5 s) must go
    enc = AacEncoder(RATE)
    packets = enc.encode(first, 0.0)
    assert enc.encode(first[:1600], 0.1) == [] and enc.samples_in == len(first)
    packets += enc.encode(second, 0.25) + enc.flush()
    assert enc.samples_in == len(first) + len(second) // 2
    expected = np.concatenate([first, second[len(second) // 2:]])
    assert as_bytes(packets) == as_bytes(encode([(0.0, expected)])[1])
    spans = loud_spans((decode(enc, packets) * 32767).astype(np.int16), RATE)
    assert len(spans) == 2 and abs(spans[1][0] - 0.5) < 0.002 and abs(spans[1][1] - 0.75) < 0.002


def test_other_rates_keep_their_clock():
    """At 48 kHz (a browser microphone) a chunk at 0.5 s starts at sample 24000."""
    x = tone(1.0, 0.55, 0.7, 48000)
    enc, got = encode([(0.0, x[:12000]), (0.5, x[24000:])], rate=48000)
    assert enc.samples_in == 48000
    [(on, off)] = loud_spans((decode(enc, got) * 32767).astype(np.int16), 48000)
    assert abs(on - 0.55) < 0.002 and abs(off - 0.7) < 0.002
