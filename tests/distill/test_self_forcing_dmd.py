"""Self-Forcing DMD wired the right way round, with gradient only through the exit step.

These tests go through `SelfForcingDMD` (distill/self_forcing.py) and the generator's rollout, not
the loss functions alone: swapping the real and fake scores in the method, or letting gradient
flow through the denoising steps before the exit, turns them red.
"""

import copy
import dataclasses

import pytest
import torch
from torch import nn

from distill.rollout import rollout
from distill.self_forcing import SelfForcingDMD
from tests.distill.tiny_recipe import tiny_parts
from distill.trainer import Trainer
from models.generator import StreamingGenerator
from models.model_dir import random_transformer

PROMPTS = ["a red circle", "a blue square"]


class AnalyticDenoiser(nn.Module):
    """A stand-in score: x0(x_t, sigma) = gain * x_t + (1 - gain) * target, returned as the flow
    (x_t - x0) / sigma that `CausalWanTransformer` would predict. gain 0: every sample denoises to
    `target` (the real data sit at `target`); gain 1: x0 = x_t (a fake score that sees the current
    samples as data)."""

    def __init__(self, target: float, gain: float):
        super().__init__()
        self.target, self.gain = target, gain
        self.unused = nn.Parameter(torch.zeros(()))  # the trainer builds an optimizer for the critic role
        self.calls = 0

    def forward(self, x_t, timestep, text):
        self.calls += 1
        sigma = (timestep / 1000.0).view(-1, *([1] * (x_t.ndim - 1)))
        x0 = self.gain * x_t + (1 - self.gain) * self.target
        return (x_t - x0) / sigma + 0 * self.unused


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return tiny_parts(tmp_path_factory.mktemp("sf"))


def sample_mean(gen, seeds=(11, 12, 13, 14)) -> float:
    """Mean latent of full (all-step) rollouts for fixed prompts and seeds."""
    with torch.no_grad():
        x = rollout(gen, PROMPTS * 2, list(seeds), 2)
    return x.mean().item()


def test_dmd_moves_the_student_toward_the_real_score(parts, tmp_path):
    """Real data at +2; the fake score sees the current samples. Following the method's DMD gradient
    must move the student's samples toward +2 by a measured distance (swapped scores move them away)."""
    recipe, cfg, vae, text = parts
    target = 2.0
    student = random_transformer(cfg, seed=4)
    sc = dataclasses.replace(recipe.self_forcing, critic_steps=0, lr=3e-3, max_steps=6, ckpt_every=10_000,
                             ema_decay=0.0, batch_size=2, rollout_chunks=2)
    gen = StreamingGenerator(cfg, student, vae, text, max_batch=4)
    teacher, critic = AnalyticDenoiser(target, 0.0), AnalyticDenoiser(0.0, 1.0)
    method = SelfForcingDMD(gen, teacher, critic, PROMPTS, sc, seed=0)
    before = abs(sample_mean(gen) - target)
    Trainer(method, sc, tmp_path, progress=False).run()
    after = abs(sample_mean(gen) - target)
    assert teacher.calls > 0 and critic.calls > 0
    assert after < before - 0.15, (before, after)  # measured: ~1.96 -> ~1.5 with the scores the right way round


def test_rollout_gradient_only_through_the_exit_step(parts):
    """The exit step's forward gets a detached input, and the student's gradient equals the one
    obtained by re-running only that forward on its recorded input."""
    recipe, cfg, vae, text = parts
    student = random_transformer(cfg, seed=5)
    gen = StreamingGenerator(cfg, student, vae, text, max_batch=2)
    calls = []
    forward_stream = student.forward_stream

    def recording(x, t, text_kv, cache, plan, write=False, **kw):  # kw: audio (avatar models)
        calls.append({"x": x, "t": t, "grad": torch.is_grad_enabled(), "write": write})
        return forward_stream(x, t, text_kv, cache, plan, write, **kw)

    student.forward_stream = recording
    x0 = rollout(gen, ["a red circle"], [3], 1, exit_steps=[2], grad=True)  # one chunk: the cache is empty
    denoising = [c for c in calls if not c["write"]]
    assert len(denoising) == 3  # steps 0, 1 and the exit step 2
    exit_call = denoising[-1]
    assert exit_call["grad"] and not any(c["grad"] for c in denoising[:-1])
    assert exit_call["x"].grad_fn is None and not exit_call["x"].requires_grad
    x0.pow(2).mean().backward()
    got = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
    student.zero_grad(set_to_none=True)
    student.forward_stream = forward_stream

    # the reference: only the exit step's forward, from its recorded input, on a fresh stream
    stream = gen.open_stream("a red circle", seed=3)
    try:
        plan = gen.cache.plan([stream.row], cfg.stream.chunk_frames)
        sigma = gen.schedule.student_sigmas()[2]
        xin = exit_call["x"].detach()
        flow = student.forward_stream(xin, exit_call["t"], stream.text_states, gen.cache, plan)
        ref = gen.schedule.x0_from_flow(xin.float(), flow.float(), sigma)
    finally:
        gen.close_stream(stream)
    assert torch.allclose(ref, x0.detach(), atol=1e-6)
    ref.pow(2).mean().backward()
    want = {n: p.grad for n, p in student.named_parameters() if p.grad is not None}
    assert set(got) == set(want)
    for n in want:
        assert torch.allclose(got[n], want[n], rtol=1e-4, atol=1e-7), n


def test_self_forcing_step_trains_every_student_weight_keeps_teacher_and_exports_ema(parts, tmp_path):
    recipe, cfg, vae, text = parts
    teacher = random_transformer(cfg, seed=3).requires_grad_(False)
    critic = copy.deepcopy(teacher).requires_grad_(True)
    student = random_transformer(cfg, seed=4)
    start = {k: v.clone() for k, v in student.state_dict().items()}
    teacher_start = {k: v.clone() for k, v in teacher.state_dict().items()}
    critic_start = {k: v.clone() for k, v in critic.state_dict().items()}
    calls = []
    teacher.register_forward_hook(lambda *a: calls.append(1))
    sc = dataclasses.replace(recipe.self_forcing, critic_lr=3e-3, lr=1e-3, max_steps=1, ckpt_every=10_000,
                             ema_decay=0.75)
    gen = StreamingGenerator(cfg, student, vae, text, max_batch=sc.batch_size)
    trainer = Trainer(SelfForcingDMD(gen, teacher, critic, PROMPTS, sc, seed=0), sc, tmp_path, progress=False)
    trainer.run()
    now = student.state_dict()
    # the DMD gradient reached every student weight through the exit steps, including the text
    # embedder and cross-attention K/V projections (the rollout recomputes the text K/V with grad)
    unmoved = [k for k in start if torch.equal(now[k], start[k])]
    assert unmoved == [], unmoved
    # the real score is used and stays exactly as it was; the critic trained
    assert calls and all(torch.equal(teacher.state_dict()[k], v) for k, v in teacher_start.items())
    assert any(not torch.equal(critic.state_dict()[k], v) for k, v in critic_start.items())
    # the exported student is the EMA after one step: d * start + (1 - d) * trained
    exported = trainer.export("student", random_transformer(cfg, seed=9)).state_dict()
    for k in start:
        assert torch.allclose(exported[k], 0.75 * start[k] + 0.25 * now[k], atol=1e-6), k
