"""A live avatar stream paused and resumed, or stalled by a slow step (an underrun): the client's audio
clock goes on meanwhile, so the audio-to-screen delay must come back to what it was before (not grow
by the pause or the stall), with frames, muxed audio and the audio the model hears on one media timeline. The engine runs on a fake clock
with the real audio model path (`tiny-avatar` at 32x32, random weights); steps take STEP_S of it."""

from __future__ import annotations

import numpy as np
import pytest

from models.config import apply_overrides, preset
from models.generator import StreamingGenerator
from models.model_dir import random_transformer, random_vae
from models.stream_api import ChunkInput, Conditioning
from models.text_encoders import build_text_encoder
from server.audio_track import AudioFormat, AudioTrack
from server.engine import Engine, EngineStream
from server.pacing import Pacer

RATE = 16000  # the client sends at the model's rate: what the model hears compares sample for sample
STEP_S, MARGIN_S, WINDOW_S = 0.2, 0.25, 10.0  # WINDOW_S: audio held past what the model heard


@pytest.fixture(scope="module")
def gen():
    cfg = apply_overrides(preset("tiny-avatar"), {"stream": {"width": 32, "height": 32}})
    return StreamingGenerator(cfg, random_transformer(cfg), random_vae(cfg), build_text_encoder(cfg.text_encoder),
                              max_batch=1)


class Session:
    """One live audio stream on the engine, a real-time audio sender from t0, and a fake clock."""

    def __init__(self, gen):
        self.gen, self.now, self.t0 = gen, 100.0, 100.0
        self.engine = Engine(gen, max_sessions=1, max_running_jobs=0, lead_margin_s=MARGIN_S, max_lead_s=1.0,
                             clock=lambda: self.now)
        rng = np.random.default_rng(0)
        self.audio = (rng.standard_normal(RATE * 30) * 6000).astype(np.int16)  # 30 s, every sample its own
        self.sent = 0  # samples sent so far
        self.step_s = STEP_S  # how long the next step takes
        self.delivered = []  # (chunk, muxed audio, model's first frame, the player's start after it)
        self.heard = np.zeros(RATE * 40, np.int16)  # what the model was fed, on its own timeline
        self.stream = EngineStream(live=True, on_chunk=self._on_chunk, on_error=print, opened_at=self.now,
                                   pacer=Pacer(gen.info.fps, margin_s=MARGIN_S, max_lead_s=1.0),
                                   audio=AudioTrack(AudioFormat(RATE), gen.info.audio_sample_rate, max_ahead_s=WINDOW_S))
        self.stream.state = gen.open(Conditioning("a face", seed=1, inputs=("audio",)))
        self.engine._streams.append(self.stream)
        self._step = gen.step
        gen.step = self._timed_step

    def _timed_step(self, streams, inputs=None):
        for pieces in inputs or []:
            for p in pieces:
                start = p.media_time_us * RATE // 1_000_000
                self.heard[start:start + len(p.data) // 2] = np.frombuffer(p.data, "<i2")
        chunks = self._step(streams, inputs)
        self.now += self.step_s
        return chunks

    def _on_chunk(self, chunk, _started, audio):
        clock = self.stream.pacer.clock
        assert clock.frames == chunk.first_frame_index + len(chunk.frames)  # the player's clock is on media time
        model_first = self.stream.frames_out - len(chunk.frames)
        self.delivered.append((chunk, audio, model_first, clock.start))

    def send(self) -> None:
        """Everything captured up to now, as a microphone client sends it (stamped by capture time)."""
        upto = round((self.now - self.t0) * RATE)
        if upto > self.sent:  # through the engine, as the session's binary input messages arrive
            self.engine.feed(self.stream, ChunkInput("audio", self.sent * 1_000_000 // RATE,
                                                     self.audio[self.sent:upto].tobytes()))
        self.sent = max(self.sent, upto)

    def run(self, chunks: int) -> None:
        """Wait (the clock advancing, audio arriving) until the next chunk is due, make it; `chunks` times."""
        for _ in range(chunks):
            self.send()
            due = self.engine._due_at(self.stream)
            while due > self.now:
                self.now = min(due, self.now + 0.02)
                self.send()
                due = self.engine._due_at(self.stream)
            self.engine._tick([self.stream])

    def close(self):
        del self.gen.step
        self.gen.close_stream(self.stream.state)


def _delays(s: Session) -> list[float]:
    """Audio-to-screen delay of each chunk: its first frame is shown at start + first / fps (the
    player's clock counts media time), and the audio of that media time was sent at t0 + first / fps."""
    return [start + chunk.first_frame_index / s.gen.info.fps - (s.t0 + chunk.first_frame_index / s.gen.info.fps)
            for chunk, _, _, start in s.delivered]


def _assert_one_timeline(s: Session, late_samples: int = 0) -> None:
    """late_samples: how much of the audio may have come too late for its chunk (heard as silence)."""
    spf = RATE // s.gen.info.fps
    silent = 0
    for chunk, muxed, model_first, _ in s.delivered:
        first, n = chunk.first_frame_index, len(chunk.frames)
        # the fMP4's audio under the frames is what was sent for their media time (or silence: late) ...
        sent = s.audio[first * spf:(first + n) * spf]
        silent += int(np.sum((muxed == 0) & (sent != 0)))
        np.testing.assert_array_equal(muxed[muxed != 0], sent[muxed != 0])
        # ... and what the model heard under the same frames, on its own (gapless) timeline
        np.testing.assert_array_equal(s.heard[model_first * spf:(model_first + n) * spf], muxed)
    assert silent <= late_samples


@pytest.mark.parametrize("stall_s", [1.5, 4.0])
def test_audio_delay_comes_back_after_an_underrun(gen, stall_s):
    """One step takes `stall_s` longer than real time allows: that chunk is shown late (an underrun,
    counted), and the next one jumps the stalled media time, so the delay is what it was before."""
    s = Session(gen)
    try:
        s.run(3)
        before = len(s.delivered)
        s.step_s = STEP_S + stall_s
        s.run(1)
        s.step_s = STEP_S
        s.run(3)
    finally:
        s.close()
    fps = gen.info.fps
    delays = _delays(s)
    assert s.stream.pacer.clock.underruns == 1
    assert delays[before] > delays[before - 1] + 0.5  # the late chunk itself: the player waited for it
    assert delays[before + 1:] == pytest.approx([delays[before - 1]] * (len(delays) - before - 1), abs=1 / fps)
    late, after = s.delivered[before][0], s.delivered[before + 1][0]
    gap_s = (after.first_frame_index - late.first_frame_index - len(late.frames)) / fps
    assert gap_s == pytest.approx(delays[before] - delays[before - 1], abs=1 / fps)  # the stall, jumped
    # the slow step raised the stream's step-time estimate, so the next chunks started earlier than
    # their look-ahead's audio had arrived: at most that look-ahead (2 frames) of each is silence
    _assert_one_timeline(s, late_samples=3 * gen.info.audio_lookahead_frames * RATE // fps)


@pytest.mark.parametrize("pause_s", [3.0, 12.0])  # 12 s: longer than the audio window
def test_audio_delay_stays_the_same_across_pause_and_resume(gen, pause_s):
    s = Session(gen)
    try:
        s.run(3)
        before = len(s.delivered)
        s.engine.pause(s.stream)
        for _ in range(round(pause_s / 0.02)):  # paused: the microphone goes on, in 20 ms pieces
            s.now += 0.02
            s.send()
        s.engine.resume(s.stream)
        s.run(2)
    finally:
        s.close()
    fps = gen.info.fps
    delays = _delays(s)
    assert max(delays[1:before]) - min(delays[1:before]) < 1e-6  # steady before the pause
    assert delays[before:] == pytest.approx([delays[before - 1]] * (len(delays) - before), abs=1 / fps)
    assert s.stream.pacer.clock.underruns == 0
    # the pause left a gap in the media timeline, about its length (minus the lead that played out)
    last, first_after = s.delivered[before - 1][0], s.delivered[before][0]
    gap_s = (first_after.first_frame_index - last.first_frame_index - len(last.frames)) / fps
    assert pause_s - 1.5 < gap_s <= pause_s + STEP_S + MARGIN_S
    _assert_one_timeline(s)
