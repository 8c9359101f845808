"""server/audio_track.py and the A/V fMP4: audio placed by media time, silence for what did not
arrive, bounded buffers, the model fed one contiguous span per chunk at its rate, the output audio
equal to what the model heard, and fragments whose audio plays in sync with their frames."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from client.protocol.errors import BadRequestError, TooLargeError
from client.audio_file import decode_audio
from server.audio_track import AudioFormat, AudioTrack
from server.encoders import Fmp4ChunkEncoder


def ramp(n: int, start: int = 1) -> np.ndarray:
    return (np.arange(start, start + n) % 30000).astype(np.int16)


def test_pieces_land_by_media_time_and_gaps_are_silence():
    track = AudioTrack(AudioFormat(1000), model_rate=1000, max_ahead_s=2.0)
    track.put(500_000, ramp(100).tobytes())  # samples 500..599; nothing before
    assert track.received_s == pytest.approx(0.6)
    start_us, pcm = track.take(0.8)
    heard = np.frombuffer(pcm, "<i2")
    assert start_us == 0 and len(heard) == 800
    assert not heard[:500].any() and (heard[500:600] == ramp(100)).all() and not heard[600:].any()
    np.testing.assert_array_equal(track.output(0.0, 0.8), heard)  # the output is what the model heard


def test_late_audio_is_dropped_and_far_future_audio_is_bounded():
    track = AudioTrack(AudioFormat(1000), model_rate=1000, max_ahead_s=1.0)
    track.take(0.5)  # the model heard silence up to 0.5 s
    track.put(400_000, ramp(200).tobytes())  # 0.4..0.6 s: the first 100 samples are too late
    assert track.late_samples == 100
    track.put(1_000_000, ramp(2000).tobytes())  # window is 0.5..1.5 s: only 500 samples fit
    assert track.overflow_samples == 1500
    assert track.buffered_samples <= 1000 + 500  # window + history: bounded whatever is sent
    _, pcm = track.take(1.5)
    heard = np.frombuffer(pcm, "<i2")  # 0.5..1.5 s
    assert (heard[:100] == ramp(200)[100:]).all() and (heard[500:] == ramp(500)).all()


def test_stereo_is_mixed_down_and_broken_pcm_is_refused():
    track = AudioTrack(AudioFormat(1000, channels=2), model_rate=1000, max_ahead_s=1.0)
    left, right = np.full(10, 100, np.int16), np.full(10, 300, np.int16)
    track.put(0, np.stack([left, right], axis=1).tobytes())
    assert (np.frombuffer(track.take(0.01)[1], "<i2") == 200).all()
    with pytest.raises(BadRequestError):
        track.put(0, b"\x00\x01\x02")  # not whole stereo samples


def test_the_model_hears_a_contiguous_stream_at_its_own_rate():
    rate, model_rate = 48000, 16000
    track = AudioTrack(AudioFormat(rate), model_rate=model_rate, max_ahead_s=3.0)
    t = np.arange(2 * rate) / rate
    tone = (np.sin(2 * np.pi * 200 * t) * 10000).astype(np.int16)
    for i in range(0, len(tone), 960):  # 20 ms pieces, as a browser sends them
        track.put(i * 1_000_000 // rate, tone[i:i + 960].tobytes())
    pieces = [track.take(until) for until in (0.3, 0.75, 1.5)]
    starts = [p[0] for p in pieces]
    lengths = [len(p[1]) // 2 for p in pieces]
    assert starts[1] == lengths[0] * 1_000_000 // model_rate  # each piece starts where the last ended
    assert starts[2] == (lengths[0] + lengths[1]) * 1_000_000 // model_rate
    heard = np.concatenate([np.frombuffer(p[1], "<i2") for p in pieces]).astype(np.float32)
    assert 0 <= 1.5 * model_rate - len(heard) < 320  # the resampler holds back at most a few ms
    expected = np.sin(2 * np.pi * 200 * np.arange(len(heard)) / model_rate) * 10000
    assert np.abs(heard[16:] - expected[16:]).max() < 600  # same tone, same time, no seam between pieces


def test_decode_audio_reads_wav_and_refuses_non_audio(tmp_path):
    import wave

    path = tmp_path / "a.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2), w.setsampwidth(2), w.setframerate(22050)
        w.writeframes(np.repeat(ramp(22050)[:, None], 2, axis=1).tobytes())
    samples = decode_audio(path.read_bytes(), rate=16000, max_seconds=5)
    assert abs(len(samples) - 16000) < 32 and samples.dtype == np.int16
    with pytest.raises(TooLargeError):
        decode_audio(path.read_bytes(), rate=16000, max_seconds=0.5)
    with pytest.raises(BadRequestError):
        decode_audio(b"not audio at all" * 100, rate=16000, max_seconds=5)


def test_fmp4_fragments_carry_audio_in_sync_with_frames():
    """A tone starts at frame 26 of the video (inside the third chunk): decoded, the first bright
    frame and the first loud sample fall at the same media time, also after a dropped chunk."""
    fps, rate, onset = 16, 16000, 26
    encoder = Fmp4ChunkEncoder(fps, audio_rate=rate)
    stream, first = b"", 0
    for k, n in enumerate((9, 12, 12, 12)):
        frames = np.zeros((n, 32, 32, 3), np.uint8)
        frames[max(onset - first, 0):] = 255
        audio = np.zeros(round(n / fps * rate), np.int16)
        at = round(max(onset - first, 0) / fps * rate)
        audio[at:] = (np.sin(np.arange(len(audio) - at) * 0.3) * 20000).astype(np.int16)
        if k != 1:  # chunk 1 was dropped for a slow client before encoding: a gap, nothing shifts
            stream += encoder.encode(frames, first, audio)
        first += n
    with av.open(io.BytesIO(stream)) as container:
        video_at = next(f.time for f in container.decode(video=0) if f.to_ndarray(format="rgb24").mean() > 128)
    with av.open(io.BytesIO(stream)) as container:
        audio_at = None
        for f in container.decode(audio=0):
            loud = np.nonzero(np.abs(f.to_ndarray()[0]) > 0.2)[0]
            if len(loud):
                audio_at = f.time + loud[0] / f.sample_rate
                break
    assert video_at == pytest.approx(onset / fps)
    assert audio_at == pytest.approx(onset / fps, abs=0.5 / fps)  # within half a frame


def test_a_track_started_later_feeds_the_model_from_there():
    """An extension's track starts at the join: the model is fed from there, at its own rate's time."""
    track = AudioTrack(AudioFormat(1000), model_rate=1000, max_ahead_s=2.0, start_s=1.5)
    track.put(1_500_000, ramp(300).tobytes())
    start_us, pcm = track.take(1.7)
    assert start_us == 1_500_000 and (np.frombuffer(pcm, "<i2") == ramp(200)).all()
    np.testing.assert_array_equal(track.output(1.5, 1.7), ramp(200))


def test_seek_skips_forward_or_feeds_frozen_audio_again():
    """A resumed avatar stream skips media time (AudioTrack.seek): the model, whose own timeline has no
    gap, is fed the audio of the new media time at its own next time; audio frozen past the new
    media time (a look-ahead heard before the pause) is fed again there."""
    audio = ramp(5000)  # sample k at k ms
    forward = AudioTrack(AudioFormat(1000), model_rate=1000, max_ahead_s=4.0)
    forward.put(0, audio.tobytes())
    forward.take(0.6)  # chunks made up to 0.5 s, a 0.1 s look-ahead heard
    forward.output(0.0, 0.5)
    forward.seek(2.0, model_time_us=500_000)  # paused: the next frame (model 0.5 s) shows media time 2.0 s
    start_us, pcm = forward.take(2.6)
    assert start_us == 500_000 and (np.frombuffer(pcm, "<i2") == audio[2000:2600]).all()
    np.testing.assert_array_equal(forward.output(2.0, 2.5), audio[2000:2500])

    back = AudioTrack(AudioFormat(1000), model_rate=1000, max_ahead_s=4.0)
    back.put(0, audio.tobytes())
    back.take(0.6)
    back.output(0.0, 0.5)
    back.seek(0.55, model_time_us=500_000)  # a skip shorter than the look-ahead: 0.55..0.6 was frozen
    start_us, pcm = back.take(1.15)
    assert start_us == 500_000 and (np.frombuffer(pcm, "<i2") == audio[550:1150]).all()
    np.testing.assert_array_equal(back.output(0.55, 1.05), audio[550:1050])


def test_a_paused_track_keeps_the_newest_audio():
    """While a live stream is paused the client's clock goes on: past the window, `make_room` drops
    the oldest audio not yet fed instead of the newest (which the resumed stream will play)."""
    audio = ramp(5000)
    track = AudioTrack(AudioFormat(1000), model_rate=1000, max_ahead_s=1.0)
    track.take(0.2)
    track.put(200_000, audio[200:3000].tobytes(), make_room=True)  # 2.8 s into a 1 s window
    assert track.overflow_samples == 0 and track.cursor_s == pytest.approx(2.0)
    track.seek(2.5, model_time_us=200_000)  # the resume
    start_us, pcm = track.take(2.9)
    assert start_us == 200_000 and (np.frombuffer(pcm, "<i2") == audio[2500:2900]).all()
    dropping = AudioTrack(AudioFormat(1000), model_rate=1000, max_ahead_s=1.0)
    dropping.put(0, audio[:3000].tobytes())  # not paused: what lands past the window is dropped
    assert dropping.overflow_samples == 2000


def test_a_piece_stamped_in_whole_microseconds_lands_on_its_sample():
    """Clients stamp pieces with floored µs (`pcm_pieces`: start * 1e6 // rate): sample 1 at 16 kHz is
    62 µs, which the track must place at sample 1 (the nearest), not 0."""
    track = AudioTrack(AudioFormat(16000), model_rate=16000, max_ahead_s=1.0)
    track.put(1 * 1_000_000 // 16000, ramp(10).tobytes())
    heard = np.frombuffer(track.take(0.001)[1], "<i2")  # 16 samples
    assert heard[0] == 0 and (heard[1:11] == ramp(10)).all()
