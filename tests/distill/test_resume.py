"""Checkpoints and resume: an interrupted stage continues from its saved step and ends where an
uninterrupted run ends (weights, optimizer, EMA, RNG and data cursor all restored)."""

import dataclasses
import json

import pytest
import torch

from distill.latents import null_text
from distill.teacher_stage import FlowMatchMethod
from tests.distill.tiny_recipe import tiny_recipe
from distill.trainer import Trainer
from models.model_dir import random_transformer
from models.schedule import FlowMatchSchedule
from models.text_encoders import build_text_encoder


def make_method(recipe, text):
    cfg = recipe.model_config()
    gen = torch.Generator().manual_seed(0)
    data = {"latents": torch.randn(6, cfg.transformer.in_channels, 4, 2, 2, generator=gen),
            "text": text.get_batch(["a red circle", "a blue square"] * 3)[0].half(), "prompts": ["p"] * 6}
    model = random_transformer(cfg, seed=0)
    tc = dataclasses.replace(recipe.teacher, batch_size=2, train_frames=3, ckpt_every=2, log_every=1, ema_decay=0.5)
    return FlowMatchMethod(model, FlowMatchSchedule(cfg.schedule), data, null_text(text), tc, seed=0), tc


def test_resume_continues_from_saved_step(tmp_path):
    recipe = tiny_recipe(tmp_path)
    text = build_text_encoder(recipe.model_config().text_encoder)

    straight, tc = make_method(recipe, text)
    Trainer(straight, dataclasses.replace(tc, max_steps=4), tmp_path / "a", progress=False).run()

    first, _ = make_method(recipe, text)
    Trainer(first, dataclasses.replace(tc, max_steps=2), tmp_path / "b", progress=False).run()
    with open(tmp_path / "b" / "log.jsonl", "a") as f:  # a line an interrupted run wrote after its last save
        f.write('{"step": 3, "loss": 9.9}\n')
    resumed, _ = make_method(recipe, text)  # a fresh process: new weights, optimizer, RNG
    trainer = Trainer(resumed, dataclasses.replace(tc, max_steps=4), tmp_path / "b", progress=False)
    assert trainer.load_checkpoint() and trainer.step == 2
    trainer = Trainer(resumed, dataclasses.replace(tc, max_steps=4), tmp_path / "b", progress=False)
    result = trainer.run(resume=True)
    assert result["step"] == 4
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # the log goes on from the saved step
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    # without --resume a stage starts over
    again, _ = make_method(recipe, text)
    fresh = Trainer(again, dataclasses.replace(tc, max_steps=1), tmp_path / "b", progress=False).run()
    assert fresh["step"] == 1


def test_time_budget_stops_a_stage(tmp_path):
    recipe = tiny_recipe(tmp_path)
    text = build_text_encoder(recipe.model_config().text_encoder)
    method, tc = make_method(recipe, text)
    result = Trainer(method, dataclasses.replace(tc, max_steps=100_000, max_minutes=0.01), tmp_path, progress=False).run()
    assert 1 <= result["step"] < 100_000  # the 0.6 s budget ends the stage long before max_steps
    assert 0.6 <= result["elapsed_s"] < 30
    assert (tmp_path / "ckpt.pt").exists()


def test_cooldown_decays_lr_to_zero_over_the_end_of_the_budget(tmp_path):
    recipe = tiny_recipe(tmp_path)
    text = build_text_encoder(recipe.model_config().text_encoder)
    method, tc = make_method(recipe, text)
    trainer = Trainer(method, dataclasses.replace(tc, max_steps=10, warmup_steps=2, cooldown=0.5), tmp_path, progress=False)
    lrs = []
    for step in range(10):
        trainer.step = step
        trainer._set_lr()
        lrs.append(trainer.optimizers["teacher"].param_groups[0]["lr"] / trainer.base_lrs["teacher"])
    # warm-up 0.5, 1; constant to half the budget; then 1 - used over the last half: 0.8, 0.6, ... 0.2
    assert lrs == pytest.approx([0.5, 1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2])
    trainer.step, trainer.cfg = 0, dataclasses.replace(trainer.cfg, max_steps=10**6, max_minutes=1.0)
    trainer.elapsed = 54.0  # 90 % of a 1-minute budget: the wall clock binds, not the steps
    trainer._set_lr()
    assert trainer.optimizers["teacher"].param_groups[0]["lr"] == pytest.approx(0.5 * 0.2 * trainer.base_lrs["teacher"])
