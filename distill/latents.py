"""The latent dataset: shapes videos encoded once by the trained VAE, with their prompt embeddings.

Built at the start of the `teacher` stage and cached in the work directory (`latents.pt`):
    latents [N, C, F, h, w] float32  (normalised VAE latents, posterior mean)
    text    [N, L, text_dim] float16 (prompt token states, padding zeroed)
    prompts list[str]
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from distill.config import ShapesDataConfig
from distill.shapes_data import ShapesDataset, to_model_video


@torch.no_grad()
def build_latent_dataset(vae, text_encoder, data_cfg: ShapesDataConfig, num_clips: int, latent_frames: int,
                         seed: int, batch: int = 16, progress: bool = True) -> dict:
    frames = vae.num_video_frames(latent_frames)
    shapes = ShapesDataset(seed, dataclasses.replace(data_cfg, frames=frames))
    latents, texts, prompts = [], [], []
    indices = range(0, num_clips, batch)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="encode latents", dynamic_ncols=True)
    for start in indices:
        samples = [shapes.sample(i) for i in range(start, min(start + batch, num_clips))]
        video = torch.stack([to_model_video(s.video) for s in samples]).to(vae.device)  # [b, 3, T, H, W]
        latents.append(vae.encode(video).float().cpu())  # [b, C, F, h, w]
        batch_prompts = [s.prompt for s in samples]
        texts.append(text_encoder.get_batch(batch_prompts)[0].half().cpu())  # [b, L, D]
        prompts += batch_prompts
    return {"latents": torch.cat(latents), "text": torch.cat(texts), "prompts": prompts}


def load_or_build(path: Path, build) -> dict:
    """`torch.load(path)` if it exists, else `build()` saved to `path`."""
    path = Path(path)
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=False)
    data = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(data, tmp)
    tmp.replace(path)
    return data


def null_text(text_encoder) -> torch.Tensor:
    """The empty prompt's states [1, L, D]: the unconditional branch of classifier-free guidance."""
    return text_encoder.get("")[0]
