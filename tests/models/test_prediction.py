"""What the head draws (TransformerConfig.prediction): "x0" (x0_hat; the flow (x_t - x0_hat) / max(sigma, 0.05)) or
"preconditioned" (x0_hat = c_skip x_t + c_out head, EDM's form for rectified flow). Every caller (samplers, the
generator, DMD, the trainers' v-loss) still receives a flow, and the x0 it derives from it is the one the head
defines. Clip and streaming forwards agree; the option round-trips through config.json, trains in the teacher stage,
and `teacher.init_from` converts a flow teacher (blocks kept, head at zero)."""

import json

import pytest
import torch

from models.config import TransformerConfig, apply_overrides, preset
from models.schedule import FlowMatchSchedule
from models.transformer import X0_MIN_SIGMA, CausalWanTransformer
from tests.models.head_options import assert_stream_equals_clip, random_inputs

MODES = ("x0", "preconditioned")


def _cfg(prediction):
    return apply_overrides(preset("tiny"), {"stream": {"sink_frames": 2, "window_frames": 4, "chunk_frames": 2},
                                            "transformer": {"prediction": prediction}})


def _pair(prediction, seed=0):
    """(cfg, a flow model, the same weights drawing `prediction`): the flow model's output is the other's head."""
    cfg = _cfg(prediction)
    torch.manual_seed(seed)
    head = CausalWanTransformer(_cfg("flow").transformer).eval()
    model = CausalWanTransformer(cfg.transformer).eval()
    model.load_state_dict(head.state_dict(), strict=True)
    return cfg, head, model


def _x0_of(prediction, h, x, sigma):
    """The x0 the head h defines at input x and sigma (a number or [B, 1, F, 1, 1])."""
    if prediction == "x0":
        return h
    a = 1 - sigma
    d2 = a * a + sigma * sigma
    return a / d2 * x + sigma / d2 ** 0.5 * h


def test_x0_the_flow_is_the_input_minus_the_head_over_sigma_per_frame():
    cfg, head, model = _pair("x0")
    x, t, text = random_inputs(cfg, 2, 4)
    t[0, 0], t[1, 3] = 0.0, 20.0  # a clean frame and one under the floor: both divide by X0_MIN_SIGMA
    with torch.no_grad():
        h = head(x, t, text, chunk_frames=2)
        flow = model(x, t, text, chunk_frames=2)
    sigma = (t / 1000).clamp_min(X0_MIN_SIGMA)[:, None, :, None, None]  # [B, 1, F, 1, 1]
    torch.testing.assert_close(flow, (x - h) / sigma, rtol=1e-4, atol=1e-4)


def test_preconditioned_flow_per_frame_and_at_the_ends():
    """v = (x_t - x0_hat) / sigma with x0_hat = c_skip x_t + c_out head, per frame; at sigma 1 the head is x0 itself
    (v = x_t - head), at sigma 0 the flow is finite (-x_t - head)."""
    cfg, head, model = _pair("preconditioned")
    x, t, text = random_inputs(cfg, 2, 4)
    t[0, 0], t[1, 3] = 0.0, 1000.0
    with torch.no_grad():
        h = head(x, t, text, chunk_frames=2)
        flow = model(x, t, text, chunk_frames=2)
    sigma = (t / 1000)[:, None, :, None, None]
    inner = sigma > 0
    want = (x - _x0_of("preconditioned", h, x, sigma)) / sigma.clamp_min(1e-6)
    torch.testing.assert_close(flow[inner.expand_as(flow)], want[inner.expand_as(want)], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(flow[1, :, 3], x[1, :, 3] - h[1, :, 3], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(flow[0, :, 0], -x[0, :, 0] - h[0, :, 0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction", MODES)
def test_a_sampler_recovers_the_x0_the_head_defines(prediction):
    """The schedule's x0 from the flow (what the student's steps, DMD and the teacher's last Euler step use) is the
    head's x0 at every sigma above the floor."""
    cfg, head, model = _pair(prediction)
    schedule = FlowMatchSchedule(cfg.schedule)
    x, _, text = random_inputs(cfg, 2, 4)
    for sigma in (0.06, 0.3, 0.9, 1.0):
        t = torch.full((2,), schedule.timestep(sigma))
        with torch.no_grad():
            got = schedule.x0_from_flow(x, model(x, t, text), sigma)
            torch.testing.assert_close(got, _x0_of(prediction, head(x, t, text), x, sigma), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction", MODES)
def test_streaming_returns_the_same_flow_as_the_block_causal_clip(prediction):
    cfg, _, model = _pair(prediction)
    assert_stream_equals_clip(model, cfg, *random_inputs(cfg, 2, 6))


@pytest.mark.parametrize("prediction", MODES)
def test_config_round_trip_and_save_load(tmp_path, prediction):
    assert "prediction" not in TransformerConfig().to_diffusers()  # a Wan DiT keeps diffusers' keys
    d = TransformerConfig(prediction=prediction).to_diffusers()
    assert TransformerConfig.from_dict(json.loads(json.dumps(d))).prediction == prediction
    cfg, _, model = _pair(prediction)
    model.save_pretrained(tmp_path)
    loaded = CausalWanTransformer.from_pretrained(tmp_path).eval()
    assert loaded.config.prediction == prediction
    x, t, text = random_inputs(cfg, 1, 2)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, text), model(x, t, text))


def test_refuses_what_it_cannot_compute():
    small = dict(num_layers=1, num_attention_heads=2, attention_head_dim=8, ffn_dim=16)
    with pytest.raises(ValueError, match="prediction"):
        CausalWanTransformer(TransformerConfig(**small, prediction="x0", noise_skip=True))
    with pytest.raises(ValueError, match="prediction must be one of"):
        CausalWanTransformer(TransformerConfig(**small, prediction="eps"))


def test_the_teacher_stage_trains_a_preconditioned_teacher(tmp_path):
    """A tiny teacher with `overrides.transformer.prediction` trains from random weights: finite losses, saved with
    the option, and its loss falls."""
    from distill.pipeline import Pipeline
    from models.model_dir import save_model_dir
    from models.vae import VideoVAE
    from tests.distill.tiny_recipe import tiny_recipe

    recipe = tiny_recipe(tmp_path, teacher={"max_steps": 24, "lr": 2e-3, "num_clips": 8, "warmup_steps": 0,
                                            "log_every": 1}, overrides={"transformer": {"prediction": "preconditioned"}})
    torch.manual_seed(0)
    save_model_dir(tmp_path / "model", recipe.model_config(), vae=VideoVAE.from_config(recipe.model_config().vae).eval())
    Pipeline(recipe, progress=False).run("teacher")
    teacher = CausalWanTransformer.from_pretrained(tmp_path / "model" / "teacher")
    assert teacher.config.prediction == "preconditioned"
    log = [json.loads(line) for line in (tmp_path / "work" / "teacher" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-8:]) < sum(losses[:8])


def test_teacher_init_from_a_flow_teacher_keeps_its_blocks_and_restarts_the_head(tmp_path):
    """`teacher.init_from` a flow teacher with `overrides.transformer.prediction: x0`: the blocks are the trained
    ones, the head is zero, so the converted teacher's flow is x_t / sigma until training moves it."""
    from tests.distill.tiny_recipe import grow_teacher

    trained, grown = grow_teacher(tmp_path, {"transformer": {"prediction": "x0"}})
    assert grown.config.prediction == "x0" and trained.config.prediction == "flow"
    assert grown.proj_out.weight.abs().max() == 0 and grown.proj_out.bias.abs().max() == 0
    kept = {k: v for k, v in trained.state_dict().items() if not k.startswith("proj_out.")}
    for k, v in kept.items():
        assert torch.equal(grown.state_dict()[k], v), k
    x = torch.randn(1, trained.config.in_channels, 3, 8, 8)
    with torch.no_grad():
        flow = grown(x, torch.tensor([400.0]), torch.randn(1, 4, trained.config.text_dim))
    torch.testing.assert_close(flow, x / 0.4, rtol=1e-5, atol=1e-5)


def test_a_stage_refuses_a_teacher_that_draws_another_thing(tmp_path):
    """ode-pairs after an x0 teacher, in a recipe that says flow: a clear error, not a student exported as flow."""
    from distill.pipeline import Pipeline, StageError
    from models.model_dir import random_transformer, save_model_dir
    from models.vae import VideoVAE
    from tests.distill.tiny_recipe import tiny_recipe

    recipe = tiny_recipe(tmp_path)
    x0_cfg = tiny_recipe(tmp_path, overrides={"transformer": {"prediction": "x0"}}).model_config()
    torch.manual_seed(0)
    save_model_dir(tmp_path / "model", recipe.model_config(), vae=VideoVAE.from_config(x0_cfg.vae).eval(),
                   teacher=random_transformer(x0_cfg, seed=1))
    with pytest.raises(StageError, match="prediction=x0"):
        Pipeline(recipe, progress=False).run("ode-pairs")
