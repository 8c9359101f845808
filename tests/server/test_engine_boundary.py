"""The engine talks to a model only through models.stream_api.StreamingModel: a stand-in model
that implements the protocol runs under it, conditioning and per-chunk inputs reach `step`, and
the real generator implements the protocol and refuses inputs nobody declared."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from models.generator import Chunk, ModelInfo
from models.stream_api import ChunkInput, Conditioning, StreamingModel
from server.engine import Engine
from tests.server_harness import tiny_generator


class RecordingModel(StreamingModel):
    """A two-frame-per-chunk model that records what the engine hands it; its chunk n reads audio up
    to (n + 1) * 0.25 s (`audio_until_us`)."""

    def __init__(self):
        self.info = ModelInfo(name="recording", family="test", width=4, height=2, fps=8, chunk_frames=1, chunk_video_frames=2, steps=1,
                              max_batch=2, max_prompt_chars=100, device="cpu", inputs=("audio",))
        self.opened: list[Conditioning] = []
        self.steps: list[list] = []  # per step: the inputs of each stream

    def open(self, conditioning: Conditioning) -> dict:
        self.opened.append(conditioning)
        return {"conditioning": conditioning, "index": 0}

    def step(self, streams, inputs=None) -> list[Chunk]:
        self.steps.append([list(pieces) for pieces in inputs])
        chunks = []
        for stream in streams:
            frames = np.full((2, 2, 4, 3), stream["index"] % 256, dtype=np.uint8)  # [T, H, W, 3]
            chunks.append(Chunk(index=stream["index"], first_frame_index=2 * stream["index"], frames=frames,
                                prompt=stream["conditioning"].prompt))
            stream["index"] += 1
        return chunks

    def set_prompt(self, stream, prompt: str, transition_chunks: int = 0, cut: bool = False) -> None:
        stream["conditioning"] = Conditioning(prompt)

    def close_stream(self, stream) -> None:
        pass

    def audio_until_us(self, stream) -> int:
        return (stream["index"] + 1) * 250_000


def test_the_real_generator_implements_the_protocol():
    assert isinstance(tiny_generator(), StreamingModel)
    assert not isinstance(object(), StreamingModel)


def test_audio_until_us_is_part_of_the_protocol_with_a_default_for_models_without_audio():
    from tests.server.clocked_generator import ClockedGenerator

    class NoAudio:  # every member but audio_until_us, not subclassing the protocol
        info = RecordingModel().info
        open = step = set_prompt = close_stream = RecordingModel.close_stream

    assert not isinstance(NoAudio(), StreamingModel)
    clocked = ClockedGenerator(step_s=0.0)
    assert isinstance(clocked, StreamingModel) and clocked.audio_until_us(clocked.open(Conditioning("x"))) == 0
    gen = tiny_generator()
    stream = gen.open(Conditioning("x", seed=1))
    try:
        assert gen.audio_until_us(stream) == 0  # the real generator without audio: the same answer
    finally:
        gen.close_stream(stream)


def test_the_engine_feeds_audio_up_to_the_models_audio_until_us():
    """The engine asks the model (StreamingModel.audio_until_us) how far each chunk reads: the audio
    pieces `step` receives end exactly there, chunk after chunk."""
    from server.audio_track import AudioFormat

    model = RecordingModel()
    engine = Engine(model, max_sessions=1, max_running_jobs=1, lead_margin_s=0.1, max_lead_s=1.0)
    rate = 16000  # the track's rate = the model's (ModelInfo.audio_sample_rate 0: the default 16 kHz)
    pcm = np.arange(rate, dtype="<i2")  # 1 s, every sample distinct
    three = threading.Event()
    engine.start()
    try:
        stream = engine.open(Conditioning("x", inputs=("audio",)), live=False, audio=AudioFormat(rate),
                             audio_preload=pcm.tobytes(),
                             on_chunk=lambda c, s, a=None: c.index >= 2 and three.set(), on_error=print).result(10)
        assert three.wait(10)
        engine.close(stream).result(10)
    finally:
        engine.stop(10)
    fed = [p for step in model.steps[:3] for pieces in step for p in pieces]
    assert [(p.media_time_us, len(p.data) // 2) for p in fed] == [(0, 4000), (250_000, 4000), (500_000, 4000)]
    np.testing.assert_array_equal(np.frombuffer(b"".join(p.data for p in fed), "<i2"), pcm[:12000])


def test_conditioning_and_inputs_reach_the_model_through_the_engine():
    model = RecordingModel()
    engine = Engine(model, max_sessions=1, max_running_jobs=1, lead_margin_s=0.1, max_lead_s=1.0)
    fed_and_stepped = threading.Event()

    def on_chunk(_chunk, _started):  # device thread, after the step that made the chunk
        if any(pieces for step in model.steps for pieces in step):
            fed_and_stepped.set()

    engine.start()
    try:
        image = np.zeros((2, 4, 3), np.uint8)
        conditioning = Conditioning("a red circle", seed=3, image=image, inputs=("audio",))
        stream = engine.open(conditioning, live=False, on_chunk=on_chunk, on_error=print).result(10)  # unpaced
        engine.feed(stream, ChunkInput("audio", media_time_us=0, data=b"\x01\x00" * 4))
        assert fed_and_stepped.wait(10)
        engine.close(stream).result(10)
    finally:
        engine.stop(10)
    assert model.opened == [conditioning]
    fed = [pieces for step in model.steps for pieces in step if pieces]
    assert fed == [[ChunkInput("audio", 0, b"\x01\x00" * 4)]]  # delivered once, with the next chunk


def test_the_generator_refuses_inputs_nobody_declared():
    gen = tiny_generator()
    assert gen.info.inputs == ()  # no shipped model reads a per-chunk input yet
    with pytest.raises(ValueError, match="takes no audio input"):
        gen.open(Conditioning("x", inputs=("audio",)))
    stream = gen.open(Conditioning("a red circle", seed=1))
    try:
        with pytest.raises(ValueError, match="did not declare"):
            gen.step([stream], [[ChunkInput("audio", 0, b"")]])
        with pytest.raises(ValueError, match="input lists"):
            gen.step([stream], [])
    finally:
        gen.close_stream(stream)


def test_an_unknown_attention_backend_is_refused_at_load():
    from models import load_generator

    with pytest.raises(ValueError, match="unknown attention backend"):
        load_generator("tiny", device="cpu", max_batch=1, attn="warp-drive")


def test_a_cut_reaches_the_model_and_one_it_cannot_make_is_refused_at_once():
    from client.protocol.errors import BadRequestError

    model = tiny_generator()
    switches = []  # the model's set_prompt calls: (prompt, transition_chunks, cut)
    set_prompt = model.set_prompt
    model.set_prompt = lambda state, prompt, transition_chunks=0, cut=False: (
        switches.append((prompt, transition_chunks, cut)), set_prompt(state, prompt, transition_chunks, cut))
    engine = Engine(model, max_sessions=1, max_running_jobs=1, lead_margin_s=0.1, max_lead_s=1.0)
    applied = threading.Event()
    engine.start()
    try:
        stream = engine.open(Conditioning("a red circle", seed=1), live=False, on_chunk=lambda c, s: None,
                             on_error=print).result(10)
        with pytest.raises(BadRequestError, match="at once"):
            engine.set_prompt(stream, "a blue square", 2, cut=True)
        engine.set_prompt(stream, "a blue square", 0, lambda update: applied.set(), cut=True)
        assert applied.wait(30)
        model.info.cuts = False  # an audio model's answer (models/generator.py)
        with pytest.raises(BadRequestError, match="cannot cut"):
            engine.set_prompt(stream, "a green square", 0, cut=True)
        engine.close(stream).result(10)
    finally:
        model.info.cuts = True
        engine.stop(10)
    assert switches == [("a blue square", 0, True)]
