"""Self-Forcing rollouts through the streaming generator (the inference loop itself).

A rollout opens one stream per prompt (from a start image when given, through
`StreamingGenerator.open` as `stream(image=...)` does), advances all of them chunk by chunk with
`StreamingGenerator.rollout_chunk` (same rolling KV cache, sink, window eviction, noise and
re-noising as inference), and returns the clean latents. With `exit_steps` each chunk stops
denoising at its own step and returns that step's x0 prediction, with gradients (when `grad`)
only through that forward pass; the committed K/V of earlier chunks are detached.

Long rollouts: chunks before `grad_from` are a burn-in, run without gradient and with every
step as when serving, and are not kept, so a rollout's memory does not grow with its length.
A `Switch` changes every stream's prompt at a chunk boundary through `set_prompt`, the call the
server makes for `session.update` (KV re-cache, or an embedding blend over `transition_chunks`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from models.generator import StreamingGenerator
from models.stream_api import Conditioning


@dataclass
class Switch:
    """A prompt switch during a rollout, made as the server makes it."""

    chunk: int  # index of the first chunk generated under the new prompts (>= 1)
    prompts: list[str]  # each stream's new prompt
    transition_chunks: int = 0  # 0: swap and re-cache the window; n > 0: blend embeddings over n chunks


@dataclass
class Rollout:
    latents: torch.Tensor  # [B, C, (chunks - grad_from) * c, h, w]: the kept chunks
    grad_from: int  # chunk index of latents' first chunk
    image_latents: torch.Tensor | None  # [B, C, 1, h, w] the start images as committed to the sink (None: no image start)


def run_rollout(gen: StreamingGenerator, prompts: list[str], seeds: list[int], num_chunks: int,
                exit_steps: list[int] | None = None, grad: bool = False, grad_from: int = 0,
                switch: Switch | None = None, images: list[np.ndarray] | None = None,
                audio: list | None = None) -> Rollout:
    """B streams for `num_chunks` chunks (exit_steps: one per chunk, None = all steps; chunks
    before `grad_from` always run all steps without gradient and are dropped). images: a uint8
    [H, W, 3] start image per stream; audio: float PCM per stream from media time 0 at the model's
    sample rate, put in the stream's audio buffer before the first chunk (avatar models)."""
    if exit_steps is not None and len(exit_steps) != num_chunks:
        raise ValueError(f"need one exit step per chunk ({num_chunks}), got {len(exit_steps)}")
    if not 0 <= grad_from < num_chunks:
        raise ValueError(f"grad_from {grad_from} must be in [0, {num_chunks})")
    if switch is not None and not (1 <= switch.chunk < num_chunks and len(switch.prompts) == len(prompts)):
        raise ValueError(f"a switch needs a chunk in [1, {num_chunks}) and one prompt per stream")
    images = images if images is not None else [None] * len(prompts)
    streams = []
    kept = []  # each [B, C, c, h, w]
    try:
        for prompt, seed, image in zip(prompts, seeds, images):
            streams.append(gen.open(Conditioning(prompt, seed=seed, image=image)))
            if audio is not None:
                streams[-1].audio.write(0, audio[len(streams) - 1])
        starts = [s.sink_latent for s in streams if s.sink_latent is not None]  # [1, C, 1, h, w] each, as committed
        image_latents = torch.cat(starts) if len(starts) == len(streams) else None
        for i in range(num_chunks):
            if switch is not None and i == switch.chunk:
                for stream, prompt in zip(streams, switch.prompts):
                    gen.set_prompt(stream, prompt, transition_chunks=switch.transition_chunks)
            if i < grad_from:
                with torch.no_grad():
                    gen.rollout_chunk(streams)  # burn-in: served exactly, nothing kept
                continue
            kept.append(gen.rollout_chunk(streams, exit_step=None if exit_steps is None else exit_steps[i], grad=grad))
    finally:
        for s in streams:
            gen.close_stream(s)
    return Rollout(torch.cat(kept, dim=2), grad_from, image_latents)


def rollout(gen: StreamingGenerator, prompts: list[str], seeds: list[int], num_chunks: int,
            exit_steps: list[int] | None = None, grad: bool = False, images: list | None = None,
            audio: list | None = None) -> torch.Tensor:
    """Latents [B, C, num_chunks * chunk_frames, h, w] of B streams (exit_steps: one per chunk, None = all steps).

    images: a uint8 [H, W, 3] start image per stream (avatar rollouts): the result then leads with each
    stream's image latent, [B, C, 1 + num_chunks * chunk_frames, h, w]. audio: as in `run_rollout`."""
    ro = run_rollout(gen, prompts, seeds, num_chunks, exit_steps=exit_steps, grad=grad, images=images, audio=audio)
    if ro.image_latents is None:
        return ro.latents
    return torch.cat([ro.image_latents.to(ro.latents.dtype), ro.latents], dim=2)


def score_windows(frames: int, window: int) -> list[int]:
    """Start frames of windows of `window` frames tiling [0, frames) (the last one ends at `frames`)."""
    if window >= frames:
        return [0]
    starts = list(range(0, frames - window + 1, window))
    if starts[-1] + window < frames:
        starts.append(frames - window)
    return starts


def split_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, C, F, h, w] -> [B * n_windows, C, window, h, w] (window-major), see `score_windows`."""
    starts = score_windows(x.shape[2], window)
    return torch.cat([x[:, :, s:s + window] for s in starts])


def labelled_windows(labels: list[int], window: int) -> list[tuple[int, int]]:
    """(start, label) of every window to score over frames labelled by their conditioning (0: the
    first prompt, 1: the prompt after a switch, -1: context only, e.g. a start image). Windows tile
    the frames as `score_windows`; a window holding frames of several labels >= 0 is scored once per
    label, each time judging only that label's frames (the others are its context)."""
    out = []
    for s in score_windows(len(labels), window):
        for label in sorted({lab for lab in labels[s:s + window] if lab >= 0}):
            out.append((s, label))
    return out
