"""The noise skip (TransformerConfig.noise_skip): the flow prediction gains s(t) * x_t, s a per-channel scale read
from each frame's time embedding by a zero-initialised linear layer. At zero the model computes what it did; once
moved, the clip forward and the streaming forward add the same term; a teacher that gains it through
`teacher.init_from` is unchanged; training reaches it."""

import json

import torch

from models.config import TransformerConfig
from models.transformer import CausalWanTransformer
from tests.models.head_options import (assert_init_from_grows_and_trains, assert_same_at_zero, assert_stream_equals_clip,
                                       option_pair, random_inputs)


def _pair(seed=0):
    """(cfg, a model without the skip, the same weights with it)."""
    return option_pair("noise_skip", True, seed)


def test_at_zero_the_model_computes_what_it_did():
    assert_same_at_zero(*_pair())


def test_clip_forward_adds_the_scaled_input():
    """With weight 0 and bias c the skip adds exactly c[channel] * x_t; with a weight the scale follows the frame's
    timestep (two frames of one clip at different sigmas get different scales)."""
    cfg, plain, skip = _pair()
    x, t, text = random_inputs(cfg, 2, 4)
    c = torch.linspace(-1.0, 2.0, cfg.transformer.out_channels)
    with torch.no_grad():
        skip.noise_skip.bias.copy_(c)
        base = plain(x, t, text, chunk_frames=2)
        torch.testing.assert_close(skip(x, t, text, chunk_frames=2) - base, c[None, :, None, None, None] * x,
                                   rtol=1e-4, atol=1e-4)
        skip.noise_skip.bias.zero_()
        skip.noise_skip.weight.normal_()
        added = (skip(x, t, text, chunk_frames=2) - base) / x  # [B, C, F, H, W]: the scale, per frame
    per_frame = added[0, 0, :, 0, 0]
    torch.testing.assert_close(added[0, 0], per_frame[:, None, None].expand_as(added[0, 0]), rtol=1e-3, atol=1e-3)
    assert (per_frame[1:] - per_frame[:-1]).abs().min() > 1e-4  # each frame its own sigma, its own scale


def test_streaming_adds_the_same_term_as_the_block_causal_clip():
    cfg, _, skip = _pair()
    with torch.no_grad():
        skip.noise_skip.weight.normal_()
        skip.noise_skip.bias.normal_()
    assert_stream_equals_clip(skip, cfg, *random_inputs(cfg, 2, 6))


def test_config_round_trip_and_save_load(tmp_path):
    assert "noise_skip" not in TransformerConfig().to_diffusers()
    d = TransformerConfig(noise_skip=True).to_diffusers()
    assert d["noise_skip"] is True and TransformerConfig.from_dict(json.loads(json.dumps(d))).noise_skip
    _, _, skip = _pair()
    with torch.no_grad():
        skip.noise_skip.bias.normal_()
    skip.save_pretrained(tmp_path)
    loaded = CausalWanTransformer.from_pretrained(tmp_path)
    assert loaded.config.noise_skip and torch.equal(loaded.noise_skip.bias, skip.noise_skip.bias)


def test_teacher_init_from_a_teacher_without_it_adds_it_at_zero_and_trains_it(tmp_path):
    """`teacher.init_from` a teacher without the skip, with `overrides.transformer.noise_skip`: the grown teacher
    computes the trained one's function; after training steps the skip has moved (its gradient reaches it)."""
    assert_init_from_grows_and_trains(tmp_path, "noise_skip", True, lambda m: m.noise_skip.bias)
