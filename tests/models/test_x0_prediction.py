"""x-prediction (TransformerConfig.x0_prediction): the head outputs the clean latent x0_hat and the model returns the
flow (x_t - x0_hat) / max(sigma, 0.05), so every caller (samplers, the generator, DMD, the trainers' v-loss) still
receives a flow, and the x0 they derive from it is the head's own output. Clip and streaming forwards agree; the
option round-trips through config.json and trains in the teacher stage."""

import json

import pytest
import torch

from models.config import TransformerConfig, apply_overrides, preset
from models.schedule import FlowMatchSchedule
from models.transformer import X0_MIN_SIGMA, CausalWanTransformer
from tests.models.head_options import assert_stream_equals_clip, random_inputs


def _cfg(x0=True):
    return apply_overrides(preset("tiny"), {"stream": {"sink_frames": 2, "window_frames": 4, "chunk_frames": 2},
                                            "transformer": {"x0_prediction": x0}})


def _pair(seed=0):
    """(cfg, a flow model, the same weights predicting x0): the flow model's output is the x0 model's head."""
    cfg = _cfg()
    torch.manual_seed(seed)
    head = CausalWanTransformer(_cfg(x0=False).transformer).eval()
    x0 = CausalWanTransformer(cfg.transformer).eval()
    x0.load_state_dict(head.state_dict(), strict=True)
    return cfg, head, x0


def test_the_flow_is_the_input_minus_the_head_over_sigma_per_frame():
    cfg, head, x0 = _pair()
    x, t, text = random_inputs(cfg, 2, 4)
    t[0, 0], t[1, 3] = 0.0, 20.0  # a clean frame and one under the floor: both divide by X0_MIN_SIGMA
    with torch.no_grad():
        x0_hat = head(x, t, text, chunk_frames=2)
        flow = x0(x, t, text, chunk_frames=2)
    sigma = (t / 1000).clamp_min(X0_MIN_SIGMA)[:, None, :, None, None]  # [B, 1, F, 1, 1]
    torch.testing.assert_close(flow, (x - x0_hat) / sigma, rtol=1e-4, atol=1e-4)


def test_a_sampler_recovers_the_head_as_x0():
    """The schedule's x0 from the flow (what the student's steps, DMD and the teacher's last Euler step use) is the
    head's output at every sigma above the floor."""
    cfg, head, x0 = _pair()
    schedule = FlowMatchSchedule(cfg.schedule)
    x, _, text = random_inputs(cfg, 2, 4)
    for sigma in (0.06, 0.3, 0.9, 1.0):
        t = torch.full((2,), schedule.timestep(sigma))
        with torch.no_grad():
            got = schedule.x0_from_flow(x, x0(x, t, text), sigma)
            torch.testing.assert_close(got, head(x, t, text), rtol=1e-4, atol=1e-4)


def test_streaming_returns_the_same_flow_as_the_block_causal_clip():
    cfg, _, x0 = _pair()
    assert_stream_equals_clip(x0, cfg, *random_inputs(cfg, 2, 6))


def test_config_round_trip_and_save_load(tmp_path):
    assert "x0_prediction" not in TransformerConfig().to_diffusers()  # a Wan DiT keeps diffusers' keys
    d = TransformerConfig(x0_prediction=True).to_diffusers()
    assert d["x0_prediction"] is True and TransformerConfig.from_dict(json.loads(json.dumps(d))).x0_prediction
    cfg, _, x0 = _pair()
    x0.save_pretrained(tmp_path)
    loaded = CausalWanTransformer.from_pretrained(tmp_path).eval()
    assert loaded.config.x0_prediction
    x, t, text = random_inputs(cfg, 1, 2)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, text), x0(x, t, text))


def test_refuses_what_it_cannot_divide():
    with pytest.raises(ValueError, match="x0_prediction"):
        CausalWanTransformer(TransformerConfig(num_layers=1, num_attention_heads=2, attention_head_dim=8, ffn_dim=16,
                                               x0_prediction=True, noise_skip=True))


def test_the_teacher_stage_trains_an_x0_teacher(tmp_path):
    """A tiny teacher with `overrides.transformer.x0_prediction` trains from random weights: finite losses, saved
    with the option, and its loss falls."""
    from distill.pipeline import Pipeline
    from models.model_dir import save_model_dir
    from models.vae import VideoVAE
    from tests.distill.tiny_recipe import tiny_recipe

    recipe = tiny_recipe(tmp_path, teacher={"max_steps": 24, "lr": 2e-3, "num_clips": 8, "warmup_steps": 0,
                                            "log_every": 1}, overrides={"transformer": {"x0_prediction": True}})
    torch.manual_seed(0)
    save_model_dir(tmp_path / "model", recipe.model_config(), vae=VideoVAE.from_config(recipe.model_config().vae).eval())
    Pipeline(recipe, progress=False).run("teacher")
    teacher = CausalWanTransformer.from_pretrained(tmp_path / "model" / "teacher")
    assert teacher.config.x0_prediction
    log = [json.loads(line) for line in (tmp_path / "work" / "teacher" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-8:]) < sum(losses[:8])


def test_teacher_init_from_a_flow_teacher_keeps_its_blocks_and_restarts_the_head(tmp_path):
    """`teacher.init_from` a flow teacher with `overrides.transformer.x0_prediction`: the blocks are the trained
    ones, the head is zero, so the converted teacher's flow is x_t / sigma until training moves it."""
    from tests.distill.tiny_recipe import grow_teacher

    trained, grown = grow_teacher(tmp_path, {"transformer": {"x0_prediction": True}})
    assert grown.config.x0_prediction and not trained.config.x0_prediction
    assert grown.proj_out.weight.abs().max() == 0 and grown.proj_out.bias.abs().max() == 0
    kept = {k: v for k, v in trained.state_dict().items() if not k.startswith("proj_out.")}
    for k, v in kept.items():
        assert torch.equal(grown.state_dict()[k], v), k
    x = torch.randn(1, trained.config.in_channels, 3, 8, 8)
    with torch.no_grad():
        flow = grown(x, torch.tensor([400.0]), torch.randn(1, 4, trained.config.text_dim))
    torch.testing.assert_close(flow, x / 0.4, rtol=1e-5, atol=1e-5)
