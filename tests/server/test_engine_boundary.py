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


class RecordingModel:
    """A two-frame-per-chunk model that records what the engine hands it."""

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

    def set_prompt(self, stream, prompt: str, transition_chunks: int = 0) -> None:
        stream["conditioning"] = Conditioning(prompt)

    def close_stream(self, stream) -> None:
        pass


def test_the_real_generator_implements_the_protocol():
    assert isinstance(tiny_generator(), StreamingModel)
    assert not isinstance(object(), StreamingModel)


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
