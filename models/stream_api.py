"""The boundary between a server (or any caller) and a streaming model: what a stream is
conditioned on, what it is fed per chunk, and the small protocol a streaming model implements.

`StreamingGenerator` (models/generator.py) implements `StreamingModel`; the server's engine is
typed against the protocol only, so a different model (or a test double) plugs in by providing
its members. A model that subclasses `StreamingModel` inherits the defaults of its optional
members (`audio_until_us`: 0, for models without audio input). Settings reach the model as arguments (see `load_generator`), never through
environment variables read behind the caller's back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from models.generator import Chunk, ModelInfo, StreamState


@dataclass(frozen=True)
class Conditioning:
    """Everything a stream is conditioned on, carried as one object from the protocol (or a job
    record) to the generator."""

    prompt: str  # the text prompt (switched later with `set_prompt`)
    seed: int | None = None  # None: a random seed (the stream reports the one it drew)
    image: np.ndarray | None = None  # uint8 [H, W, 3] start image, VAE-encoded into the sink
    inputs: tuple[str, ...] = ()  # per-chunk input kinds the stream will be fed (e.g. "audio")


def check_prompt_switch(info: ModelInfo, transition_chunks: int, cut: bool) -> None:
    """ValueError for a switch the model cannot make: a negative blend, a cut with a blend (a cut is
    at once), or a cut on a model whose `info.cuts` is false. The one rule the generator applies in
    `set_prompt` and a server checks when the request arrives (its switch runs later)."""
    if transition_chunks < 0:
        raise ValueError("transition_chunks must be >= 0")
    if cut and transition_chunks:
        raise ValueError("a cut switches at once: transition_chunks must be 0")
    if cut and not info.cuts:
        raise ValueError(f"model {info.name!r} takes audio and cannot cut: switch with a re-cache")


@dataclass(frozen=True)
class ChunkInput:
    """One piece of a streamed per-chunk input (e.g. audio samples), as it arrived."""

    kind: str  # one of the stream's Conditioning.inputs
    media_time_us: int  # media time of the data's first sample, µs since the stream started
    data: bytes  # the raw input (audio: PCM in the format the session declared)


@runtime_checkable
class StreamingModel(Protocol):
    """Open a stream, step a batch of streams by one chunk, switch a prompt, close, describe; for
    models with audio input, say how far the next chunk reads the audio."""

    info: ModelInfo  # resolution, fps, chunk size, limits and the per-chunk inputs the model takes

    def open(self, conditioning: Conditioning) -> StreamState:
        """A new stream (raises models.generator.CapacityError when every cache row is taken)."""

    def step(self, streams: Sequence[StreamState],
             inputs: Sequence[Sequence[ChunkInput]] | None = None) -> list[Chunk]:
        """The next chunk of every stream, batched; `inputs[i]`: what arrived for stream i since
        its previous chunk (only kinds it declared in its Conditioning)."""

    def set_prompt(self, stream: StreamState, prompt: str, transition_chunks: int = 0, cut: bool = False) -> None:
        """Switch the stream's prompt from its next chunk (`cut`: from an empty cache, a scene cut;
        ValueError where the model cannot)."""

    def close_stream(self, stream: StreamState) -> None:
        """Free the stream's cache row."""

    def audio_until_us(self, stream: StreamState) -> int:
        """Media time (µs since the stream started) up to which the stream's next chunk reads its
        audio input: a server feeds the chunk the audio up to here (models/audio.py has the contract).
        The default, for models without audio input, is 0 (the chunk reads none); a model whose
        `info.inputs` has "audio" must override it."""
        return 0
