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
