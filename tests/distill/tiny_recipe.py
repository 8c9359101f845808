"""The `configs/tiny.yaml` recipe with its output under a given root (tests and smoke runs)."""

from __future__ import annotations

from pathlib import Path

from distill.config import DistillConfig, load_config

TINY_YAML = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


def tiny_recipe(root: str | Path, **overrides) -> DistillConfig:
    """configs/tiny.yaml with model dir `root/model`, work dir `root/work`, plus `overrides`
    (sections merge: `tiny_recipe(p, teacher={"max_steps": 9})` keeps the other teacher settings)."""
    root = Path(root)
    return load_config(TINY_YAML, {"out": str(root / "model"), "work_dir": str(root / "work"), **overrides})


def tiny_parts(root: str | Path):
    """(recipe, its model config, a random VAE, the text encoder) for tests that build stages by hand."""
    import torch

    from models.text_encoders import build_text_encoder
    from models.vae import VideoVAE

    recipe = tiny_recipe(root)
    cfg = recipe.model_config()
    torch.manual_seed(0)
    return recipe, cfg, VideoVAE.from_config(cfg.vae).eval(), build_text_encoder(cfg.text_encoder)
