"""The latent refiner (TransformerConfig.refine_channels): per-frame convolutions over the head's flow and x_t, last
one at zero. At zero the model computes what it did; once moved, it changes each frame from that frame alone, the
streaming forward adds what the block-causal clip forward does; a teacher that gains it through `teacher.init_from`
is unchanged, and training reaches it."""

import json

import pytest
import torch

from models.config import TransformerConfig
from models.transformer import CausalWanTransformer
from tests.models.head_options import (assert_init_from_grows_and_trains, assert_same_at_zero, assert_stream_equals_clip,
                                       option_pair, random_inputs)


def _pair(seed=0):
    """(cfg, a model without the refiner, the same weights with it, 8 channels wide)."""
    return option_pair("refine_channels", 8, seed)


def _move(model):
    with torch.no_grad():
        model.refiner.conv_out.weight.normal_(std=0.1)
        model.refiner.conv_out.bias.normal_(std=0.1)


def test_at_zero_the_model_computes_what_it_did():
    assert_same_at_zero(*_pair())


def test_moved_it_changes_a_frame_from_that_frame_alone():
    """Moved off zero, the refiner adds to the output; a change to the head's flow in frame 2 changes its output in
    frame 2 only (the blocks mix frames, so the check is on the refiner itself)."""
    cfg, plain, refined = _pair()
    _move(refined)
    x, t, text = random_inputs(cfg, 1, 4)
    with torch.no_grad():
        base = plain(x, t, text)
        out = refined(x, t, text)
        assert (out - base).abs().max() > 1e-3  # moved: it adds something
        flow = base.clone()
        flow[:, :, 2] += 1.0  # the head's output of frame 2 only
        temb = refined._timesteps(t, 1, 4)[0]  # [1, F, E]
        changed = refined.refiner(flow, x, temb) - refined.refiner(base, x, temb)
    per_frame = changed.abs().amax(dim=(0, 1, 3, 4))  # [F]
    assert per_frame[2] > 1e-3 and per_frame[[0, 1, 3]].max() == 0


def test_its_correction_follows_the_frame_timestep():
    """The same flow and x_t at two noise levels get different corrections (the time embedding modulates it)."""
    cfg, _, refined = _pair()
    _move(refined)
    x, _, _ = random_inputs(cfg, 1, 2)
    flow = torch.randn_like(x)
    with torch.no_grad():
        low, high = (refined.refiner(flow, x, refined._timesteps(torch.tensor([[t, t]]), 1, 2)[0]) for t in (50.0, 900.0))
    assert (low - high).abs().max() > 1e-3


def test_streaming_adds_the_same_term_as_the_block_causal_clip():
    cfg, _, refined = _pair()
    _move(refined)
    assert_stream_equals_clip(refined, cfg, *random_inputs(cfg, 2, 6))


def test_config_round_trip_and_save_load(tmp_path):
    assert "refine_channels" not in TransformerConfig().to_diffusers()
    d = TransformerConfig(refine_channels=8).to_diffusers()
    assert d["refine_channels"] == 8 and TransformerConfig.from_dict(json.loads(json.dumps(d))).refine_channels == 8
    _, _, refined = _pair()
    _move(refined)
    refined.save_pretrained(tmp_path)
    loaded = CausalWanTransformer.from_pretrained(tmp_path)
    assert loaded.config.refine_channels == 8 and torch.equal(loaded.refiner.conv_out.weight, refined.refiner.conv_out.weight)


def test_refused_with_another_head():
    small = dict(num_attention_heads=2, attention_head_dim=8, text_dim=8, ffn_dim=16, num_layers=1)
    with pytest.raises(ValueError, match="refine_channels"):
        CausalWanTransformer(TransformerConfig(**small, prediction="x0", refine_channels=4))


def test_teacher_init_from_a_teacher_without_it_adds_it_at_zero_and_trains_it(tmp_path):
    assert_init_from_grows_and_trains(tmp_path, "refine_channels", 8, lambda m: m.refiner.conv_out.weight)
