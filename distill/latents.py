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
                         seed: int, batch: int = 16, progress: bool = True, first: int = 0) -> dict:
    """The clips `first .. first + num_clips - 1` of `ShapesDataset(seed)` (the module docstring's fields)."""
    frames = vae.num_video_frames(latent_frames)
    shapes = ShapesDataset(seed, dataclasses.replace(data_cfg, frames=frames))
    latents, texts, prompts = [], [], []
    end = first + num_clips
    indices = range(first, end, batch)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="encode latents", dynamic_ncols=True)
    for start in indices:
        samples = [shapes.sample(i) for i in range(start, min(start + batch, end))]
        video = torch.stack([to_model_video(s.video) for s in samples]).to(vae.device)  # [b, 3, T, H, W]
        latents.append(vae.encode(video).float().cpu())  # [b, C, F, h, w]
        batch_prompts = [s.prompt for s in samples]
        texts.append(text_encoder.get_batch(batch_prompts)[0].half().cpu())  # [b, L, D]
        prompts += batch_prompts
    return {"latents": torch.cat(latents), "text": torch.cat(texts), "prompts": prompts}


def latent_object_masks(data_cfg: ShapesDataConfig, seed: int, num_clips: int, latent_frames: int,
                        temporal: int, spatial: int) -> torch.Tensor:
    """[N, 1, F, h, w] bool: the latent pixels an object touches in each clip of `build_latent_dataset(...,
    seed)` (same videos): `vae_stage.object_mask` pooled onto the causal VAE's grid, video frame 0 alone to
    latent frame 0, then each `temporal` frames to one latent frame, `spatial` x `spatial` pixels to one."""
    from distill.vae_stage import object_mask

    frames = 1 + temporal * (latent_frames - 1)
    shapes = ShapesDataset(seed, dataclasses.replace(data_cfg, frames=frames))
    masks = []
    for i in range(num_clips):
        mask = object_mask(to_model_video(shapes.sample(i).video)[None])[0]  # [1, T, H, W]
        rest = mask[:, 1:].unflatten(1, (latent_frames - 1, temporal)).amax(dim=2)  # [1, F-1, H, W]
        mask = torch.cat([mask[:, :1], rest], dim=1)  # [1, F, H, W]
        masks.append(torch.nn.functional.max_pool2d(mask, spatial) > 0)  # [1, F, h, w]
    return torch.stack(masks)


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
