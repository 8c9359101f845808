"""The architecture presets describe the shipped checkpoints: a recipe run from a preset (configs/*.yaml) trains the
architecture that ships, so the preset's VAE and transformer must match the checkpoint's framecast.json."""

import json
from pathlib import Path

import pytest

from models.config import preset

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("preset_name, checkpoint", [("shapes-untrained", "shapes"),
                                                     ("shapes-avatar-untrained", "shapes-avatar")])
def test_preset_architecture_matches_the_shipped_checkpoint(preset_name, checkpoint):
    shipped = json.loads((ROOT / "checkpoints" / checkpoint / "framecast.json").read_text())
    cfg = preset(preset_name)
    for key in ("base_dim", "z_dim", "num_res_blocks"):
        assert getattr(cfg.vae, key) == shipped["vae"][key], key
    assert list(cfg.vae.dim_mult) == list(shipped["vae"]["dim_mult"])


def test_the_shapes_preset_streams_as_the_shipped_model_does():
    """Chunking, cache and switch settings (`recache_frames` among them) of the preset a shapes recipe trains from
    are the shipped model's: Self-Forcing's rollouts stream (and switch) the way the shipped student serves."""
    import dataclasses

    shipped = json.loads((ROOT / "checkpoints" / "shapes" / "framecast.json").read_text())["stream"]
    stream = dataclasses.asdict(preset("shapes-untrained").stream)
    assert {k: stream[k] for k in shipped} == shipped
    assert set(stream) == set(shipped)
