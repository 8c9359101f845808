"""A live avatar stream paused and resumed: the client's audio clock goes on during the pause, so the
audio-to-screen delay must stay what it was before the pause (not grow by the pause), with frames,
muxed audio and the audio the model hears on one media timeline. The engine runs on a fake clock
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
        self.now += STEP_S
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
    fps, spf = gen.info.fps, RATE // gen.info.fps
    # audio-to-screen delay of each chunk: its first frame is shown at start + first / fps (the
    # player's clock counts media time), and the audio of that media time was sent at t0 + first / fps
    delays = [start + chunk.first_frame_index / fps - (s.t0 + chunk.first_frame_index / fps)
              for chunk, _, _, start in s.delivered]
    assert max(delays[1:before]) - min(delays[1:before]) < 1e-6  # steady before the pause
    assert delays[before:] == pytest.approx([delays[before - 1]] * (len(delays) - before), abs=1 / fps)
    assert s.stream.pacer.clock.underruns == 0
    # the pause left a gap in the media timeline, about its length (minus the lead that played out)
    last, first_after = s.delivered[before - 1][0], s.delivered[before][0]
    gap_s = (first_after.first_frame_index - last.first_frame_index - len(last.frames)) / fps
    assert pause_s - 1.5 < gap_s <= pause_s + STEP_S + MARGIN_S
    for chunk, muxed, model_first, _ in s.delivered:
        first, n = chunk.first_frame_index, len(chunk.frames)
        # the fMP4's audio under the frames is what was sent for their media time ...
        np.testing.assert_array_equal(muxed, s.audio[first * spf:(first + n) * spf])
        # ... and what the model heard under the same frames, on its own (gapless) timeline
        np.testing.assert_array_equal(s.heard[model_first * spf:(model_first + n) * spf], muxed)
