"""`framecast eval --image-start`: how closely a stream started from an image keeps that image.

For each prompt and seed the start image is the first frame of a ground-truth shapes video of the
prompt (`ShapesDataset.sample_for_prompt(prompt, index=seed)`, rendered at the model's size). The
stream is opened with it (`open_stream(prompt, seed, image=...)`, the path of a `session.start`
with an `image`), and the frames of its first chunk are compared with the image: mean absolute
error per pixel and channel in 0-255 levels, for the first frame, for the whole first chunk, and
per frame. Two references sit beside it:
- `vae_reconstruction`: the same error of the VAE's own reconstruction of the image (encode the
  image as one latent frame, decode it): no stream can keep the image closer than that;
- `without_image`: the same stream (prompt, seed) opened without the image, compared with it:
  what the prompt alone reaches;
- `ground_truth_motion`: the ground-truth video's own first frames (as many as the chunk has)
  compared with its first frame: how far a scene that keeps the image and moves as the prompt says
  ("racing", "bouncing") gets from it. A first chunk near this figure keeps the image as well as
  its prompt's motion allows; the reconstruction is the floor only for a still scene;
- `ground_truth_reconstruction`: those ground-truth frames through the VAE (encoded as one video,
  decoded) compared with the image: what a stream whose latents were exactly the truth's would
  score, i.e. the reconstruction-level error of a first chunk that moves as the prompt says.
"""

from __future__ import annotations

import numpy as np
import torch

from distill.config import ShapesDataConfig
from distill.shapes_data import ShapesDataset
from models.vae import frames_to_uint8, uint8_to_video


def pixel_error(frames: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Mean |difference| per frame (0-255 levels) of uint8 `frames [T, H, W, 3]` against `image [H, W, 3]`."""
    return np.abs(frames.astype(np.float32) - image.astype(np.float32)[None]).mean(axis=(1, 2, 3))


def ground_truth(prompt: str, seed: int, width: int, height: int, frames: int) -> np.ndarray:
    """The first `frames` frames of `prompt`'s ground-truth video (uint8 `[T, H, W, 3]`), deterministic per (prompt, seed)."""
    data = ShapesDataset(0, ShapesDataConfig(width=width, height=height))
    return data.sample_for_prompt(prompt, index=seed, frames=frames).video


def start_image(prompt: str, seed: int, width: int, height: int) -> np.ndarray:
    """The ground-truth first frame of `prompt` (uint8 `[H, W, 3]`), deterministic per (prompt, seed)."""
    return ground_truth(prompt, seed, width, height, 1)[0]


@torch.no_grad()
def video_reconstruction(vae, frames: np.ndarray) -> np.ndarray:
    """The VAE's round trip of a video: uint8 `[T, H, W, 3]` (T = 1 + k x its temporal compression) -> encode
    -> decode -> uint8 `[T, H, W, 3]`."""
    video = uint8_to_video(frames[None]).to(vae.device, vae.dtype)  # [1, 3, T, H, W]
    return frames_to_uint8(vae.decode(vae.encode(video)))[0]


def vae_reconstruction(vae, image: np.ndarray) -> np.ndarray:
    """The VAE's round trip of one image: uint8 `[H, W, 3]` -> encode -> decode -> uint8 `[H, W, 3]`."""
    return video_reconstruction(vae, image[None])[0]


def _first_chunks(gen, prompts: list[str], seeds: list[int], images: list[np.ndarray | None]) -> list[np.ndarray]:
    """The first chunk's frames of each (prompt, seed, image) stream, up to `max_batch` at once."""
    out = []
    jobs = list(zip(prompts, seeds, images))
    for start in range(0, len(jobs), gen.info.max_batch):
        group = jobs[start:start + gen.info.max_batch]
        states = [gen.open_stream(p, seed=s, image=im) for p, s, im in group]
        try:
            out.extend(chunk.frames for chunk in gen.step(states))
        finally:
            for state in states:
                gen.close_stream(state)
    return out


def evaluate_image_start(gen, prompts: list[str], seeds: list[int]) -> dict:
    """The `image_start` section of eval.json (see the module docstring)."""
    cases = [(p, s) for p in prompts for s in seeds]
    images = [start_image(p, s, gen.info.width, gen.info.height) for p, s in cases]
    with_image = _first_chunks(gen, [p for p, _ in cases], [s for _, s in cases], images)
    without = _first_chunks(gen, [p for p, _ in cases], [s for _, s in cases], [None] * len(cases))
    runs = []
    for (prompt, seed), image, chunk, plain in zip(cases, images, with_image, without):
        errors = pixel_error(chunk, image)
        truth = ground_truth(prompt, seed, gen.info.width, gen.info.height, len(chunk))
        runs.append({
            "prompt": prompt, "seed": seed,
            "first_frame": float(errors[0]), "first_chunk": float(errors.mean()), "per_frame": errors.tolist(),
            "vae_reconstruction": float(pixel_error(vae_reconstruction(gen.vae, image)[None], image)[0]),
            "without_image": float(pixel_error(plain, image).mean()),
            "ground_truth_motion": float(pixel_error(truth, image).mean()),
            "ground_truth_reconstruction": float(pixel_error(video_reconstruction(gen.vae, truth), image).mean()),
        })

    def mean(key):
        return float(np.mean([r[key] for r in runs]))

    summary = {key: mean(key) for key in ("first_frame", "first_chunk", "vae_reconstruction", "without_image",
                                          "ground_truth_motion", "ground_truth_reconstruction")}
    summary["first_chunk_over_reconstruction"] = (summary["first_chunk"] / summary["vae_reconstruction"]
                                                  if summary["vae_reconstruction"] else None)
    return {"units": "mean |pixel difference|, 0-255 levels", "runs": runs, "summary": summary}
