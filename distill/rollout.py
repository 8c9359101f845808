"""Self-Forcing rollouts through the streaming generator (the inference loop itself).

A rollout opens one stream per prompt, advances all of them chunk by chunk with
`StreamingGenerator.rollout_chunk` (same rolling KV cache, sink, window eviction, noise and
re-noising as inference), and returns the clean latents. With `exit_steps` each chunk stops
denoising at its own step and returns that step's x0 prediction, with gradients (when `grad`)
only through that forward pass; the committed K/V of earlier chunks are detached.
"""

from __future__ import annotations

import torch

from models.generator import StreamingGenerator


def rollout(gen: StreamingGenerator, prompts: list[str], seeds: list[int], num_chunks: int,
            exit_steps: list[int] | None = None, grad: bool = False, images: list | None = None,
            audio: list | None = None) -> torch.Tensor:
    """Latents [B, C, num_chunks * chunk_frames, h, w] of B streams (exit_steps: one per chunk, None = all steps).

    images: a uint8 [H, W, 3] start image per stream (avatar rollouts): the result then leads with each
    stream's image latent, [B, C, 1 + num_chunks * chunk_frames, h, w]. audio: float PCM per stream from
    media time 0 at the model's sample rate, put in the stream's audio buffer before the first chunk."""
    if exit_steps is not None and len(exit_steps) != num_chunks:
        raise ValueError(f"need one exit step per chunk ({num_chunks}), got {len(exit_steps)}")
    streams = []
    try:
        for i, (prompt, seed) in enumerate(zip(prompts, seeds)):
            streams.append(gen.open_stream(prompt, seed=seed, image=None if images is None else images[i]))
            if audio is not None:
                streams[-1].audio.write(0, audio[i])
        leads = [s.image_latent for s in streams] if images is not None else []
        chunks = [
            gen.rollout_chunk(streams, exit_step=None if exit_steps is None else exit_steps[i], grad=grad)
            for i in range(num_chunks)
        ]  # each [B, C, c, h, w]
    finally:
        for s in streams:
            gen.close_stream(s)
    if leads:
        chunks = [torch.cat(leads).to(chunks[0].dtype), *chunks]
    return torch.cat(chunks, dim=2)


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
