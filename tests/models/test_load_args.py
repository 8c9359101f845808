"""`models.load_args.add_load_arguments`: `--lora FILE[:SCALE]` (repeatable) and `--text-device` on every
command that loads a model with `--model`, and both reach `load_generator` (through `framecast generate`)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from client.cli import build_parser, main
from tests.server.test_generate_cli import tiny_model_dir  # noqa: F401  (a fixture: a saved `tiny` model directory)

MODEL_COMMANDS = [["generate", "a prompt"], ["bench", "stream"], ["bench", "serve"], ["bench", "avatar"],
                  ["eval", "--model", "shapes"]]


@pytest.mark.parametrize("command", MODEL_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_model_commands_take_the_load_options(command):
    parser = build_parser()
    args = parser.parse_args([*command, "--lora", "a/adapter.pt:0.5", "--lora", "peft_dir", "--text-device", "cpu"])
    assert args.lora == ["a/adapter.pt:0.5", "peft_dir"] and args.text_device == "cpu"
    defaults = parser.parse_args(command)
    assert defaults.lora == [] and defaults.text_device is None


@pytest.fixture
def lora_file(tmp_path):
    """A rank-4 LoRA on the `tiny` model's first query projection (diffusers / PEFT key names)."""
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "lora.safetensors"
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.randn(4, 64, generator=g),
               "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.randn(64, 4, generator=g),
               "transformer.blocks.0.attn1.to_q.alpha": torch.tensor(8.0)}, str(path))
    return path


def test_every_lora_given_reaches_the_loader(tiny_model_dir, lora_file, tmp_path, capsys):  # noqa: F811
    """A missing adapter fails the load wherever it stands among the `--lora`s: each one is loaded."""
    generate = ["generate", "a red circle", "--model", str(tiny_model_dir), "--device", "cpu", "--frames", "5",
                "-o", str(tmp_path / "o.mp4")]
    missing = tmp_path / "missing.safetensors"
    assert main([*generate, "--lora", f"{lora_file}:0.5"]) == 0
    capsys.readouterr()
    assert main([*generate, "--lora", f"{missing}:0.5", "--lora", str(lora_file)]) == 2
    assert main([*generate, "--lora", str(lora_file), "--lora", str(missing)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == [f"framecast: error: {missing}: no such file"] * 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a text device that does not exist")
def test_text_device_reaches_the_loader(tiny_model_dir, tmp_path, capsys):  # noqa: F811
    assert main(["generate", "x", "--model", str(tiny_model_dir), "--device", "cpu", "--text-device", "cuda",
                 "--frames", "5", "-o", str(tmp_path / "o.mp4")]) == 2
    assert "CUDA was requested" in capsys.readouterr().err
