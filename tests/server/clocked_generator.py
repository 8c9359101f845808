"""A stand-in generator for the pacing tests: it takes a fixed wall time per step (sleeping, not
computing), so "the device is N times faster than real time" holds however loaded the test
machine is, and every frame is one flat colour derived from the stream's prompt, so a prompt
switch is visible in the frames themselves. It implements models.stream_api.StreamingModel (`info`,
`open`, `set_prompt`, `step`, `close_stream`; `audio_until_us` is the protocol's default), all the engine sees; the server around it is real.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

import numpy as np

from models.generator import Chunk, ModelInfo
from models.stream_api import Conditioning, StreamingModel

FPS = 16
FIRST_FRAMES, CHUNK_FRAMES = 5, 8  # frames of a stream's first chunk and of every later one (0.5 s)


def prompt_colour(prompt: str) -> tuple[int, int, int]:
    """The flat RGB colour of every frame generated under `prompt` (far apart for different prompts)."""
    digest = hashlib.sha256(prompt.encode()).digest()
    return tuple(40 + (b % 4) * 60 for b in digest[:3])


@dataclass
class _Stream:
    prompt: str
    chunk_index: int = 0
    frames_emitted: int = 0


class ClockedGenerator(StreamingModel):  # no audio input: the protocol's audio_until_us default
    """`step` sleeps `step_s` (whatever the batch size) and returns flat-colour chunks."""

    def __init__(self, step_s: float, size: int = 32, max_batch: int = 4):
        self.step_s = step_s
        self.size = size
        self.info = ModelInfo(name="clocked", family="test", width=size, height=size, fps=FPS, chunk_frames=2,
                              chunk_video_frames=CHUNK_FRAMES,
                              steps=1, max_batch=max_batch, max_prompt_chars=2000, device="cpu")
        self.steps = 0  # steps taken (each one batched over its streams)
        self._lock = threading.Lock()

    def open(self, conditioning: Conditioning) -> _Stream:
        return _Stream(conditioning.prompt)

    def set_prompt(self, stream: _Stream, prompt: str, transition_chunks: int = 0, cut: bool = False) -> None:
        stream.prompt = prompt

    def close_stream(self, stream: _Stream) -> None:
        pass

    def snapshot(self, stream: _Stream):
        """What a finished job stores to be extended later (no latents: this stand-in has none)."""
        import torch

        from models.resume import ResumeState

        return ResumeState(seed=0, prompt=stream.prompt, latent_frames=0, chunk_index=stream.chunk_index,
                           frames_emitted=stream.frames_emitted, latents=torch.zeros(0), decoder_cache=[],
                           rng_state=torch.Generator().get_state())

    def step(self, streams: list[_Stream], inputs=None) -> list[Chunk]:
        time.sleep(self.step_s)
        with self._lock:
            self.steps += 1
        chunks = []
        for s in streams:
            n = FIRST_FRAMES if s.chunk_index == 0 else CHUNK_FRAMES
            frames = np.empty((n, self.size, self.size, 3), np.uint8)  # [T, H, W, 3]
            frames[:] = prompt_colour(s.prompt)
            chunks.append(Chunk(index=s.chunk_index, first_frame_index=s.frames_emitted, frames=frames, prompt=s.prompt))
            s.chunk_index += 1
            s.frames_emitted += n
        return chunks
