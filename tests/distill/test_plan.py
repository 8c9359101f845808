"""`framecast distill plan`: the per-stage memory estimate against a peak measured by torch's own
`MemTracker` (torch.distributed._tools.mem_tracker: every tensor storage alive, by dispatch) for one
training step of the tiny recipe, and the CLI table."""

import copy
import dataclasses

import pytest
import torch
from torch.distributed._tools.mem_tracker import MemTracker

from client.cli import main
from distill.ode_init import ODERegressionMethod
from distill.ode_pairs import ODEPairStore, sample_ode_pairs
from distill.plan import plan
from distill.self_forcing import SelfForcingDMD
from tests.distill.tiny_recipe import tiny_recipe
from distill.trainer import Trainer
from models.generator import StreamingGenerator
from models.model_dir import random_transformer
from models.schedule import FlowMatchSchedule
from models.text_encoders import build_text_encoder
from models.vae import VideoVAE

PROMPTS = ["a red circle", "a blue square on black", "two green triangles", "a yellow circle"]


class PeakTracker(MemTracker):
    """MemTracker's global peak only: its per-module statistics refuse a module called several times
    in one step (a rollout calls the student once per denoising step), so those hooks do nothing."""

    def _pre_fw_hook(self, module, inputs):
        pass

    def _post_fw_hook(self, module, inputs, outputs):
        pass

    def _pre_bw_hook(self, module, args):
        pass

    def _post_bw_hook(self, module, args):
        pass


def measured_peak(trainer: Trainer, role: str, *external) -> int:
    """Peak bytes of live tensors over one `role` update, after a first full step created the
    optimizer states (the steady state); `external`: what exists before the update."""
    trainer.cfg = dataclasses.replace(trainer.cfg, max_steps=1)
    trainer.run()
    modules = trainer.method.roles()
    tracker = PeakTracker()
    tracker.track_external(*modules.values(), *trainer.optimizers.values(), *external)
    with tracker:
        trainer._update(role)
    return sum(v for snap in tracker.get_tracker_snapshot("peak").values() for k, v in snap.items() if k == "Total")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    recipe = tiny_recipe(root, ode_init={"batch_size": 8}, self_forcing={"batch_size": 2, "rollout_chunks": 4})
    cfg = recipe.model_config()
    torch.manual_seed(0)
    return root, recipe, cfg, VideoVAE.from_config(cfg.vae).eval(), build_text_encoder(cfg.text_encoder)


def estimate(recipe, stage: str) -> int:
    """The plan for one process (no sharding), fp32 compute, scores not materialised (CPU SDPA is fused)."""
    plans = {p.stage: p for p in plan(recipe, gpus=1, compute_bytes=4, scores=False)}
    return plans[stage].total(checkpointing=False)


def test_plan_matches_measured_peak_ode_init(setup):
    root, recipe, cfg, vae, text = setup
    schedule = FlowMatchSchedule(cfg.schedule)
    pc = recipe.ode_pairs
    shape = (cfg.transformer.in_channels, pc.frames, cfg.latent_height, cfg.latent_width)
    sample_ode_pairs(random_transformer(cfg, seed=1), text, schedule, shape, pc, PROMPTS, root / "pairs", progress=False)
    student = random_transformer(cfg, seed=2)
    method = ODERegressionMethod(student, schedule, ODEPairStore(root / "pairs"), cfg.stream.chunk_frames,
                                 recipe.ode_init, seed=0)
    peak = measured_peak(Trainer(method, recipe.ode_init, root / "ode-init", progress=False), "student")
    want = estimate(recipe, "ode-init")
    print(f"ode-init: plan {want} B, measured peak {peak} B")
    assert abs(want - peak) <= 0.25 * peak, (want, peak)


def test_plan_matches_measured_peak_self_forcing(setup):
    root, recipe, cfg, vae, text = setup
    teacher = random_transformer(cfg, seed=3).requires_grad_(False)
    critic = copy.deepcopy(teacher).requires_grad_(True)
    student = random_transformer(cfg, seed=4)
    sc = recipe.self_forcing
    gen = StreamingGenerator(cfg, student, vae, text, max_batch=sc.batch_size)
    trainer = Trainer(SelfForcingDMD(gen, teacher, critic, PROMPTS, sc, seed=0), sc, root / "sf", progress=False)
    peak = measured_peak(trainer, "student", *gen.cache.k, *gen.cache.v, gen.cache.latents,
                         *trainer.ema.shadow.values())
    want = estimate(recipe, "self-forcing")
    print(f"self-forcing: plan {want} B, measured peak {peak} B")
    assert abs(want - peak) <= 0.25 * peak, (want, peak)


def test_plan_cli_prints_every_stage(capsys):
    assert main(["distill", "plan", "--config", "configs/wan2.1-1.3b.yaml", "--gpus", "8", "--gpu-mem", "80"]) == 0
    out = capsys.readouterr().out
    for stage in ("ode-pairs", "ode-init", "self-forcing", "real score", "critic"):
        assert stage in out
    assert "8 GPU(s) of 80 GiB" in out
