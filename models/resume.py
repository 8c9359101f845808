"""ResumeState: what a stream needs to continue later, in another process, exactly where it stopped.

Made by `StreamingGenerator.snapshot(stream)` (or `context_state(frames)` for a video that was
not generated here) and consumed by `StreamingGenerator.resume_stream(prompt, state)`.

What is kept, and why it is the cheapest correct choice:
- the clean latents of the frames the rolling cache holds (sink + window, oldest first): the
  self-attention K/V are recomputed from them under the continuation's prompt by one t=0 pass
  per cached chunk (LongLive's KV re-cache, what a live prompt switch does anyway). Keeping the
  K/V instead would cost layers x 2 x tokens x dim per frame (GBs at Wan scale) and would still
  need the re-cache for a new prompt;
- the VAE decoder's causal-conv cache (its last inputs per temporal conv), so the first decoded
  frames of the continuation join the earlier ones exactly as in an uninterrupted stream;
- the stream's noise generator state and counters, so a continuation draws the same noise the
  uninterrupted stream would have drawn;
- `tail_frames`: frames the stream already decoded past the point its consumer stopped (a job
  ends mid-chunk); a continuation shows them first, so no frame is skipped at the join;
- avatar models: the audio windows the cached frames were made with (the KV re-cache replays each
  frame with its own audio, as a live prompt switch does) and the stream's audio buffer, placed by
  media time (`audio_start`: the sample index of its first sample at the model's rate): the audio
  received but not yet consumed, i.e. what the next chunks' context and look-ahead read. A
  continuation may overwrite the buffer from any media time on with new audio (models/audio.py).

With these, `resume_stream(p, snapshot(s))` yields exactly the chunks that `s` yields after
`set_prompt(s, p)` (tests/models/test_generator_resume.py; with audio,
tests/models/test_generator_audio.py).

Sizes (fp32): the shipped `shapes` model, 2.0 MB (decoder cache 2.0 MB, latents 24 KB); Wan2.1
at 832x480, the latents are ~5 MB but the decoder cache is ~3.6 GB. At that scale the decoder
cache should instead be rebuilt by decoding the last latent frames again: its memory is finite
(causal convolutions over cached inputs, no feedback) — on `shapes`, re-decoding the last 15
latent frames gives the next chunk within 0.3 levels of the exact one (12 frames: 12 levels).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

_FORMAT = "framecast.resume/1"


@dataclass
class ResumeState:
    seed: int  # the stream's seed (informational: the noise continues from rng_state)
    prompt: str  # the prompt of the last generated chunk
    latent_frames: int  # latent frames committed to the cache so far
    chunk_index: int  # index of the next chunk
    frames_emitted: int  # video frames decoded so far (tail_frames included)
    latents: torch.Tensor  # [C, n, h, w] clean latents of the cached frames, oldest first (CPU)
    # the VAE decoder's per-conv cache, [1, ch, <=2, H', W'] each, or diffusers' "Rep" marker (an
    # upsampler that has only seen the first latent frame) or None
    decoder_cache: list[torch.Tensor | str | None]
    rng_state: torch.Tensor  # uint8: torch.Generator.get_state() of the stream's noise generator
    tail_frames: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 3), np.uint8))  # uint8 [T, H, W, 3]
    # avatar models (empty otherwise): the audio windows of the cached frames, aligned with `latents`
    audio_windows: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # [n, M, A] float32 (CPU)
    audio_pcm: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # float32 [N]: the audio buffer
    audio_start: int = 0  # sample index (model rate, from media time 0) of audio_pcm[0]
    image_sink: bool = False  # latents[:, 0] is a start image committed clean (kept clean under context noise)

    def save(self, path: str | Path) -> Path:
        """One safetensors file (tensors + JSON metadata), written atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"latents": self.latents.contiguous(), "rng_state": self.rng_state.contiguous(),
                   "tail_frames": torch.from_numpy(np.ascontiguousarray(self.tail_frames)),
                   "audio_windows": self.audio_windows.float().contiguous(),
                   "audio_pcm": torch.from_numpy(np.ascontiguousarray(self.audio_pcm, np.float32))}
        markers = {}
        for i, entry in enumerate(self.decoder_cache):
            if isinstance(entry, torch.Tensor):
                tensors[f"decoder.{i}"] = entry.contiguous()
            elif entry is not None:
                markers[str(i)] = entry
        meta = {"format": _FORMAT, "seed": self.seed, "prompt": self.prompt, "latent_frames": self.latent_frames,
                "chunk_index": self.chunk_index, "frames_emitted": self.frames_emitted,
                "decoder_entries": len(self.decoder_cache), "decoder_markers": markers, "audio_start": self.audio_start,
                "image_sink": self.image_sink}
        partial = path.with_name(path.name + ".partial")
        save_file(tensors, str(partial), metadata={"framecast": json.dumps(meta)})
        partial.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ResumeState":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("framecast", "{}"))
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a framecast resume state")
        tensors = load_file(str(path))
        return cls(
            seed=meta["seed"], prompt=meta["prompt"], latent_frames=meta["latent_frames"],
            chunk_index=meta["chunk_index"], frames_emitted=meta["frames_emitted"], latents=tensors["latents"],
            decoder_cache=[tensors.get(f"decoder.{i}", meta.get("decoder_markers", {}).get(str(i)))
                           for i in range(meta["decoder_entries"])],
            rng_state=tensors["rng_state"], tail_frames=tensors["tail_frames"].numpy(),
            audio_windows=tensors.get("audio_windows", torch.zeros(0)),  # absent in states saved before audio
            audio_pcm=tensors["audio_pcm"].numpy() if "audio_pcm" in tensors else np.zeros(0, np.float32),
            audio_start=meta.get("audio_start", 0), image_sink=meta.get("image_sink", False),
        )

    @staticmethod
    def tail_frame_count(path: str | Path) -> int:
        """len(tail_frames) of a saved state, read from the file's header (the tensors stay on disk)."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return f.get_slice("tail_frames").get_shape()[0]

    def nbytes(self) -> int:
        """Bytes held (about the file size)."""
        tensors = [self.latents, self.rng_state, self.audio_windows,
                   *[c for c in self.decoder_cache if isinstance(c, torch.Tensor)]]
        return sum(t.numel() * t.element_size() for t in tensors) + self.tail_frames.nbytes + self.audio_pcm.nbytes
