"""Shared by the tests of the output-head options (noise skip, x-prediction, latent refiner): random model inputs, the
check that the streaming forward, chunk by chunk against a rolling cache, equals the block-causal clip forward, and
for the options that start at zero, a model with and without one and the check that `teacher.init_from` grows it."""

from __future__ import annotations

import torch

from models.config import apply_overrides, preset
from models.kv_cache import RollingKVCache
from models.transformer import CausalWanTransformer


def option_cfg(**transformer):
    """The tiny preset with small stream sizes and these transformer options."""
    over = {"stream": {"sink_frames": 2, "window_frames": 4, "chunk_frames": 2}, "transformer": transformer}
    return apply_overrides(preset("tiny"), over)


def option_pair(name: str, value, seed: int = 0):
    """(cfg, a tiny model without option `name`, the same weights with it at `value`): the option's own parameters,
    exactly those `distill.grow.ZERO_INIT_OPTIONS` lists, keep their initial values."""
    cfg = option_cfg(**{name: value})
    torch.manual_seed(seed)
    plain = CausalWanTransformer(option_cfg(**{name: type(value)()}).transformer).eval()
    grown = CausalWanTransformer(cfg.transformer).eval()
    missing, unexpected = grown.load_state_dict(plain.state_dict(), strict=False)
    from distill.grow import ZERO_INIT_OPTIONS

    assert sorted(missing) == sorted(ZERO_INIT_OPTIONS[name]) and not unexpected
    return cfg, plain, grown


def assert_same_at_zero(cfg, plain, grown) -> None:
    """`grown` (an option at its initial zero) and `plain` predict exactly the same flow, block-causal."""
    x, t, text = random_inputs(cfg, 2, 4)
    with torch.no_grad():
        assert torch.equal(grown(x, t, text, chunk_frames=2), plain(x, t, text, chunk_frames=2))


def assert_init_from_grows_and_trains(root, name: str, value, moved) -> None:
    """`teacher.init_from` a teacher without option `name`, in a recipe with it: the grown teacher computes the trained
    one's function, and after 3 training steps `moved(teacher)` (a tensor of the option's) is off zero."""
    from distill.pipeline import Pipeline
    from models.model_dir import save_model_dir
    from models.vae import VideoVAE
    from tests.distill.tiny_recipe import assert_same_function, grow_teacher, tiny_recipe

    over = {"transformer": {name: value}}
    trained, grown = grow_teacher(root, over)
    assert getattr(grown.config, name) == value and moved(grown).abs().max() == 0
    assert_same_function(trained, grown)
    cfg = tiny_recipe(root / "b").model_config()
    recipe = tiny_recipe(root / "b", teacher={"max_steps": 3, "lr": 1e-3, "num_clips": 4, "warmup_steps": 0,
                                              "init_from": str(root / "trained")}, overrides=over)
    save_model_dir(root / "b" / "model", cfg, vae=VideoVAE.from_config(cfg.vae).eval())
    Pipeline(recipe, progress=False).run("teacher")
    trained_on = CausalWanTransformer.from_pretrained(root / "b" / "model" / "teacher").float()
    assert moved(trained_on).abs().max() > 1e-5


def random_inputs(cfg, b: int, f: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x [B, C, F, H, W], timesteps [B, F] in [0, 1000), text states [B, 5, text_dim]) for model config `cfg`."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, cfg.transformer.in_channels, f, cfg.latent_height, cfg.latent_width, generator=g)
    return x, torch.rand(b, f, generator=g) * 1000, torch.randn(b, 5, cfg.transformer.text_dim, generator=g)


def assert_stream_equals_clip(model, cfg, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, chunk: int = 2) -> None:
    """x [B, C, F, H, W], t [B, F], text [B, Lt, text_dim]: every chunk's streamed flow within 1e-4 of the clip's."""
    b, f = x.shape[0], x.shape[2]
    rows = list(range(b))
    with torch.no_grad():
        full = model(x, t, text, chunk_frames=chunk)
        cache = RollingKVCache(cfg, max_batch=b)
        text_kv = model.text_kv(text)
        for j in range(0, f, chunk):
            plan = cache.plan(rows, chunk)
            out = model.forward_stream(x[:, :, j:j + chunk], t[:, j:j + chunk], text_kv, cache, plan, write=True)
            cache.advance(rows, chunk)
            assert (out - full[:, :, j:j + chunk]).abs().max().item() < 1e-4, f"chunk {j // chunk}"
