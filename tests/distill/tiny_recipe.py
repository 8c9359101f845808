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


def grow_teacher(root: Path, overrides: dict):
    """(trained, grown): a random trained teacher saved at root/trained, and the teacher the `teacher` stage writes
    (lr 0, one step) when a tiny recipe with `overrides` starts from it (`teacher.init_from`)."""
    import torch

    from distill.pipeline import Pipeline
    from models.model_dir import random_transformer, save_model_dir
    from models.transformer import CausalWanTransformer
    from models.vae import VideoVAE

    cfg = tiny_recipe(root / "a").model_config()
    torch.manual_seed(0)
    save_model_dir(root / "a" / "model", cfg, vae=VideoVAE.from_config(cfg.vae).eval())
    trained = random_transformer(cfg, seed=7).eval()
    save_model_dir(root / "trained", cfg, teacher=trained)
    recipe = tiny_recipe(root / "a", teacher={"max_steps": 1, "lr": 0.0, "num_clips": 4, "init_from": str(root / "trained")},
                         overrides=overrides)
    Pipeline(recipe, progress=False).run("teacher")
    return trained, CausalWanTransformer.from_pretrained(root / "a" / "model" / "teacher").float().eval()


def assert_same_function(a, b, **kw) -> None:
    """`a` and `b` predict the same flow (1e-4) for one random clip at timestep 500 (`kw` go to `b` only)."""
    import torch

    g = torch.Generator().manual_seed(1)
    t = a.config
    x, text = torch.randn(1, t.in_channels, 3, 8, 8, generator=g), torch.randn(1, 4, t.text_dim, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(b(x, torch.tensor([500.0]), text, **kw), a(x, torch.tensor([500.0]), text),
                                   rtol=1e-4, atol=1e-4)
