"""scripts/average_students.py: the mean of two students' transformer weights, loadable as a model directory;
students of another architecture are refused."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch

from models import load_generator
from models.model_dir import random_transformer, save_model_dir
from models.vae import VideoVAE
from tests.distill.tiny_recipe import tiny_recipe

REPO = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("average_students", REPO / "scripts" / "average_students.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_average_of_two_students_is_the_mean_of_their_weights(tmp_path):
    cfg = tiny_recipe(tmp_path).model_config()
    vae = VideoVAE.from_config(cfg.vae).eval()
    students = [random_transformer(cfg, seed=s) for s in (1, 2)]
    for i, student in enumerate(students):
        save_model_dir(tmp_path / f"s{i}", cfg, transformer=student, vae=vae)
    average_students = _script().average_students
    average_students(tmp_path / "mean", [tmp_path / "s0", tmp_path / "s1"], [0.25, 0.75])
    mean = load_generator(str(tmp_path / "mean"), device="cpu").transformer.state_dict()
    a, b = (s.state_dict() for s in students)
    for name, value in mean.items():
        torch.testing.assert_close(value.float(), 0.25 * a[name].float() + 0.75 * b[name].float())
    assert (tmp_path / "mean" / "framecast.json").exists()  # the rest of the directory is the first student's

    with pytest.raises(ValueError, match="sum to 1"):
        average_students(tmp_path / "bad", [tmp_path / "s0", tmp_path / "s1"], [0.5, 0.6])
    wider = dataclasses.replace(cfg, transformer=dataclasses.replace(cfg.transformer, num_layers=cfg.transformer.num_layers + 1))
    save_model_dir(tmp_path / "other", wider, transformer=random_transformer(wider, seed=3), vae=vae)
    with pytest.raises(ValueError, match="differs"):
        average_students(tmp_path / "bad", [tmp_path / "s0", tmp_path / "other"])
