"""distill/grow.py: a deepened transformer computes what the trained one did, and its new blocks train."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from distill.grow import deepen, insert_after
from models.config import preset
from models.model_dir import random_transformer


def _inputs(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = cfg.transformer
    x = torch.randn(2, t.in_channels, 4, 8, 8, generator=g)  # [B, C, F, h, w]
    text = torch.randn(2, 5, t.text_dim, generator=g)  # [B, L, text_dim]
    return x, torch.tensor([900.0, 300.0]), text


@pytest.mark.parametrize("layers", [3, 5])
def test_deepened_transformer_computes_the_same_function(layers):
    cfg = preset("tiny")
    trained = random_transformer(cfg, seed=3).eval()
    deeper_cfg = dataclasses.replace(cfg.transformer, num_layers=layers)
    grown = deepen(trained, deeper_cfg).eval()
    assert len(grown.blocks) == layers and grown.config == deeper_cfg
    x, t, text = _inputs(cfg)
    with torch.no_grad():
        torch.testing.assert_close(grown(x, t, text), trained(x, t, text), rtol=1e-5, atol=1e-5)
    # the trained weights are copied, not shared
    grown.blocks[0].attn1.to_q.weight.data.add_(1.0)
    assert not torch.equal(grown.blocks[0].attn1.to_q.weight, trained.blocks[0].attn1.to_q.weight)


def test_new_blocks_receive_gradient_and_change_the_output_after_a_step():
    cfg = preset("tiny")
    trained = random_transformer(cfg, seed=3)
    grown = deepen(trained, dataclasses.replace(cfg.transformer, num_layers=cfg.transformer.num_layers + 2))
    x, t, text = _inputs(cfg)
    grown(x, t, text).square().mean().backward()
    new = [i for i, b in enumerate(grown.blocks) if not b.ffn.net[2].weight.any()]
    assert len(new) == 2
    for i in new:  # the zeroed output projections get gradient, so the new block starts to learn
        assert grown.blocks[i].ffn.net[2].weight.grad.abs().sum() > 0
        assert grown.blocks[i].attn1.to_out[0].weight.grad.abs().sum() > 0


def test_insert_after_spreads_the_new_blocks_and_refuses_to_shrink():
    assert insert_after(6, 4) == [1, 1, 0, 1, 1, 0]
    assert insert_after(2, 5) == [3, 2]
    assert sum(insert_after(6, 0)) == 0
    cfg = preset("tiny")
    trained = random_transformer(cfg, seed=0)
    with pytest.raises(ValueError, match="only adds"):
        deepen(trained, dataclasses.replace(cfg.transformer, num_layers=1))
    with pytest.raises(ValueError, match="only num_layers"):
        deepen(trained, dataclasses.replace(cfg.transformer, num_layers=4, ffn_dim=64))
