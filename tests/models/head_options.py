"""Shared by the tests of the output-head options (noise skip, x-prediction): random model inputs, and the check that
the streaming forward, chunk by chunk against a rolling cache, equals the block-causal clip forward."""

from __future__ import annotations

import torch

from models.kv_cache import RollingKVCache


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
