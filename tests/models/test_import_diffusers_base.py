"""`framecast import` from a diffusers-layout base (scripts/random_wan_base.py at the `tiny` shapes):
checkpoint over the base, a diffusers-named LoRA merged at a scale, bf16 storage, family settings,
and one-line errors for bad inputs."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from client.cli import main as framecast
from models import load_generator
from models.config import preset
from models.model_dir import random_transformer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("random_wan_base", REPO / "scripts" / "random_wan_base.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script.main([str(tmp_path_factory.mktemp("base") / "wan-tiny"), "--preset", "tiny"])


def test_import_checkpoint_and_lora_in_bf16(base, tmp_path):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 64, generator=g), torch.randn(64, 4, generator=g)  # rank 4 on a 64-wide q projection
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": a, "transformer.blocks.0.attn1.to_q.lora_B.weight": b,
               "transformer.blocks.0.attn1.to_q.alpha": torch.tensor(8.0)}, str(tmp_path / "lora.safetensors"))
    out = tmp_path / "longlive-tiny"
    assert framecast(["import", str(base), "-o", str(out), "--family", "longlive", "--checkpoint", str(base / "student.pt"),
                      "--lora", f"{tmp_path / 'lora.safetensors'}:0.5", "--width", "64", "--height", "64"]) == 0
    stored = load_file(str(out / "transformer" / "diffusion_pytorch_model.safetensors"))
    student = random_transformer(preset("tiny"), seed=1).state_dict()  # the checkpoint's weights
    assert all(v.dtype == torch.bfloat16 for v in stored.values())
    name = "blocks.0.attn1.to_q.weight"
    assert torch.equal(stored[name], (student[name] + 0.5 * (8.0 / 4) * (b @ a)).to(torch.bfloat16))
    assert torch.equal(stored["blocks.1.attn1.to_q.weight"], student["blocks.1.attn1.to_q.weight"].to(torch.bfloat16))
    cfg = json.loads((out / "framecast.json").read_text())
    assert (cfg["family"], cfg["stream"]["sink_frames"], cfg["stream"]["window_frames"]) == ("longlive", 3, 6)
    gen = load_generator(str(out), device="cpu", max_batch=1, dtype=torch.float32, text_device="cpu")
    chunks = gen.stream("a red circle", seed=0)
    assert next(chunks).frames.shape == (9, 64, 64, 3)
    chunks.close()


def test_import_errors_are_one_line(base, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("taken")
    assert framecast(["import", str(base), "-o", str(tmp_path / "full"), "--family", "causvid"]) == 2
    assert framecast(["import", str(base), "-o", str(tmp_path / "a"), "--family", "causvid",
                      "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert framecast(["import", str(tmp_path), "-o", str(tmp_path / "b"), "--family", "causvid"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # besides the progress bar
    assert len(lines) == 3 and all(line.startswith("framecast: error: ") for line in lines)
    assert "not empty" in lines[0] and "missing.pt: no such file" in lines[1] and "not a Wan2.1 folder" in lines[2]
