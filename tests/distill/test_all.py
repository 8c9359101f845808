"""`framecast distill all` on the tiny recipe writes a model directory that streams."""

import json

import numpy as np
import pytest

from client.cli import main
from distill.config import load_config
from tests.distill.tiny_recipe import tiny_recipe
from models import load_generator


def test_distill_all_writes_a_loadable_model_dir(tmp_path, monkeypatch):
    recipe = tiny_recipe(tmp_path, vae_decoder={"beside_teacher": True})  # vae-decoder in a second process
    yaml_path = tmp_path / "tiny.yaml"
    import dataclasses

    import yaml

    def plain(obj):
        if dataclasses.is_dataclass(obj):
            return {k: plain(v) for k, v in dataclasses.asdict(obj).items()}
        if isinstance(obj, dict):
            return {k: plain(v) for k, v in obj.items()}
        return list(obj) if isinstance(obj, tuple) else obj

    yaml_path.write_text(yaml.safe_dump(plain(recipe)))
    assert main(["distill", "all", "--config", str(yaml_path)]) == 0
    model = tmp_path / "model"
    for part in ("framecast.json", "transformer/config.json", "teacher/config.json", "vae/config.json"):
        assert (model / part).exists(), part
    info = json.loads((model / "framecast.json").read_text())
    assert info["name"] == "tiny-distilled" and info["vae"]["latents_mean"] is not None
    summary = json.loads((tmp_path / "work" / "summary.json").read_text())
    assert list(summary) == ["vae", "teacher", "vae-decoder", "ode-pairs", "ode-init", "self-forcing"]
    assert all(summary[s]["wall_s"] > 0 for s in summary)
    assert summary["vae-decoder"]["step"] == 2  # the child process trained and reported back
    assert len((tmp_path / "work" / "vae-decoder" / "log.jsonl").read_text().splitlines()) == 2

    gen = load_generator(str(model), device="cpu")
    stream = gen.stream("a red circle", seed=3)
    a = [next(stream).frames for _ in range(2)]
    stream.close()
    stream = gen.stream("a red circle", seed=3)
    b = [next(stream).frames for _ in range(2)]
    stream.close()
    assert a[0].shape[1:] == (32, 32, 3) and a[0].dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(a, b))

    # --resume skips finished stages (their done.json) and rewrites nothing but framecast.json
    before = (model / "transformer" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert main(["distill", "all", "--config", str(yaml_path), "--resume"]) == 0
    assert (model / "transformer" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == before


def test_recipes_parse_and_unknown_settings_fail():
    shapes = load_config("configs/shapes.yaml")
    assert shapes.model_config().stream.width == 64 and shapes.self_forcing.rollout_chunks * 3 > 9
    wan = load_config("configs/wan2.1-1.3b.yaml")
    assert wan.model_dir and wan.self_forcing.critic_steps == 5 and wan.self_forcing.guidance == 4.0
    with pytest.raises(ValueError, match="unknown setting"):
        load_config(None, {"teacher": {"no_such_field": 1}})


def test_stage_needing_an_earlier_one_is_a_cli_error(tmp_path, capsys):
    recipe_yaml = tmp_path / "r.yaml"
    recipe_yaml.write_text(f"model: tiny\nout: {tmp_path / 'm'}\nwork_dir: {tmp_path / 'w'}\n")
    assert main(["distill", "ode-init", "--config", str(recipe_yaml)]) == 2
    assert "ode-pairs" in capsys.readouterr().err
