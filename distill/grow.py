"""Deepen a trained transformer without changing what it computes (function-preserving growth).

A teacher that has plateaued at its depth (docs/DISTILL.md, "The shapes teacher's plateau") can continue
deeper: `deepen` returns a model of `cfg.num_layers` blocks whose extra blocks are copies of the trained
block before them with every residual output projection zeroed (self-attention `to_out`, cross-attention
`to_out`, the audio cross-attention's, the FFN's second linear). Each such block adds exactly zero to the
residual stream, so the deeper model's output equals the trained one's; the zeroed projections receive
gradient at once (their inputs are not zero), and through them the rest of the new block (the zero-init
residual branches of Goyal et al. 2017 / ReZero, Bachlechner et al. 2021, as used to grow networks by
Chen et al. 2016, Net2Net).

`with_options` gives a trained transformer the video-start embedding (config `video_start`), the noise skip
(config `noise_skip`) or the latent refiner (config `refine_channels`, its last convolution) at zero, which also
leaves its function unchanged until training moves it.

`with_prediction` turns a flow-predicting transformer into one whose head draws x0 or the preconditioned output
(config `prediction`). No function-preserving map exists (the head would have to output x_t - sigma v, which its
linear layer cannot), so the blocks keep their trained features and the output head restarts at zero: a fine-tune,
not a growth (docs/DISTILL.md, "What the shapes teacher's head draws").
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from models.config import TransformerConfig
from models.transformer import CausalWanTransformer, TransformerBlock


def zero_residual_outputs(block: TransformerBlock) -> TransformerBlock:
    """Zero the block's output projections in place, so it maps x to x."""
    outs = [block.attn1.to_out[0], block.attn2.to_out[0], block.ffn.net[2]]
    if hasattr(block, "attn_audio"):
        outs.append(block.attn_audio.to_out[0])
    with torch.no_grad():
        for linear in outs:
            linear.weight.zero_()
            linear.bias.zero_()
    return block


def insert_after(old: int, extra: int) -> list[int]:
    """How many new blocks follow each of the `old` trained blocks: `extra` spread evenly over them."""
    counts = [0] * old
    for k in range(extra):
        counts[(k * old) // extra] += 1
    return counts


# the options a trained transformer can gain without changing its function: their parameters start at zero
ZERO_INIT_OPTIONS: dict[str, tuple[str, ...]] = {
    "video_start": ("video_start_embedding",),
    "noise_skip": ("noise_skip.weight", "noise_skip.bias"),
    "refine_channels": tuple(f"refiner.{layer}.{p}" for layer in ("conv_in", "time", "conv_mid", "conv_out")
                             for p in ("weight", "bias")),
}


def with_options(trained: CausalWanTransformer, want: TransformerConfig) -> CausalWanTransformer:
    """A copy of `trained` with each option of `ZERO_INIT_OPTIONS` that `want` has on and `trained` lacks added at
    zero (the same function); `trained` itself when there is none to add."""
    add = {name: getattr(want, name) for name in ZERO_INIT_OPTIONS if getattr(want, name) and not getattr(trained.config, name)}
    if not add:
        return trained
    grown = CausalWanTransformer(dataclasses.replace(trained.config, **add)).to(next(trained.parameters()).device)
    missing, unexpected = grown.load_state_dict(trained.state_dict(), strict=False)
    if unexpected or sorted(missing) != sorted(key for name in add for key in ZERO_INIT_OPTIONS[name]):
        raise ValueError(f"with_options: unexpected state differences {missing} {unexpected}")
    return grown


def with_prediction(trained: CausalWanTransformer, prediction: str) -> CausalWanTransformer:
    """A copy of the flow-predicting `trained` whose head draws `prediction`: the same blocks, `proj_out` zeroed."""
    if trained.config.prediction != "flow":
        raise ValueError(f"with_prediction: the transformer already predicts {trained.config.prediction!r}")
    converted = CausalWanTransformer(dataclasses.replace(trained.config, prediction=prediction))
    converted = converted.to(next(trained.parameters()).device)
    converted.load_state_dict(trained.state_dict(), strict=True)
    with torch.no_grad():
        converted.proj_out.weight.zero_()
        converted.proj_out.bias.zero_()
    return converted


def deepen(trained: CausalWanTransformer, cfg: TransformerConfig) -> CausalWanTransformer:
    """A `cfg.num_layers`-block copy of `trained` (same config otherwise) that computes the same function."""
    old = trained.config.num_layers
    if dataclasses.replace(cfg, num_layers=old) != trained.config:
        raise ValueError("deepen: only num_layers may differ between the trained transformer and the new one")
    if cfg.num_layers < old:
        raise ValueError(f"deepen: {cfg.num_layers} layers asked of a transformer with {old}; it only adds layers")
    grown = copy.deepcopy(trained)
    grown.config = cfg
    blocks = []
    for block, extra in zip(trained.blocks, insert_after(old, cfg.num_layers - old)):
        blocks.append(copy.deepcopy(block))
        blocks += [zero_residual_outputs(copy.deepcopy(block)) for _ in range(extra)]
    grown.blocks = torch.nn.ModuleList(blocks)
    return grown
