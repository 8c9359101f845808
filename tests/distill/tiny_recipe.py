"""A seconds-long recipe on the `tiny` preset at 32x32 (tests and smoke runs of the whole pipeline)."""

from __future__ import annotations

from pathlib import Path

from distill.config import DistillConfig, load_config


def tiny_recipe(root: str | Path, **overrides) -> DistillConfig:
    """Every stage a few steps on a 32x32 `tiny` model; model dir `root/model`, work dir `root/work`."""
    root = Path(root)
    values = {
        "model": "tiny",
        "name": "tiny-distilled",
        "out": str(root / "model"),
        "work_dir": str(root / "work"),
        "overrides": {"stream": {"width": 32, "height": 32}},
        "data": {"width": 32, "height": 32, "max_objects": 1},
        "vae": {"max_steps": 3, "batch_size": 2, "clip_frames": 5, "crop": 16, "stats_clips": 2, "log_every": 1},
        "vae_decoder": {"max_steps": 2, "batch_size": 1, "clip_frames": 9, "crop": 16, "log_every": 1},
        "teacher": {"max_steps": 3, "batch_size": 4, "num_clips": 4, "clip_latent_frames": 4, "train_frames": 4,
                    "encode_batch": 4, "warmup_steps": 0, "ema_decay": 0.9, "log_every": 1, "lr": 1e-3},
        "ode_pairs": {"num_pairs": 4, "batch_size": 4, "frames": 4, "steps": 4, "guidance": 2.0},
        "ode_init": {"max_steps": 3, "batch_size": 4, "log_every": 1, "lr": 1e-3},
        "self_forcing": {"max_steps": 2, "batch_size": 2, "rollout_chunks": 4, "score_frames": 4, "critic_steps": 2,
                         "lr": 1e-4, "critic_lr": 1e-3, "guidance": 2.0, "log_every": 1, "ema_decay": 0.9},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return load_config(None, values)
