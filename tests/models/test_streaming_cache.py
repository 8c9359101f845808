"""The rolling KV cache: streaming equals block-causal before eviction, equals a dense
sink + window reference after it, and runs 1000 chunks with flat memory."""

import dataclasses
import resource

import torch

from models.config import apply_overrides, preset
from models.kv_cache import CachePlan, RollingKVCache
from models.transformer import CausalWanTransformer


def _tiny(sink=2, window=4, chunk=2):
    cfg = apply_overrides(preset("tiny"), {"stream": {"sink_frames": sink, "window_frames": window, "chunk_frames": chunk}})
    torch.manual_seed(0)
    model = CausalWanTransformer(cfg.transformer).eval()
    return cfg, model


def _frames(cfg, b, f, seed):
    g = torch.Generator().manual_seed(seed)
    c = cfg.transformer.in_channels
    return torch.randn(b, c, f, cfg.latent_height, cfg.latent_width, generator=g)


class ListCache:
    """Oracle: keeps every frame's K/V in a list; a chunk sees sink + last `window` frames + itself,
    gathered densely in time order with positions 0..n-1."""

    def __init__(self, cfg):
        self.sink, self.window, self.t = cfg.stream.sink_frames, cfg.stream.window_frames, cfg.tokens_per_frame
        self.k = [[] for _ in range(cfg.transformer.num_layers)]
        self.v = [[] for _ in range(cfg.transformer.num_layers)]
        self.n = 0
        self.shape = (cfg.transformer.num_attention_heads, cfg.transformer.attention_head_dim)

    def held(self):
        return list(range(min(self.n, self.sink))) + list(range(max(self.sink, self.n - self.window), self.n))

    def plan(self, c):
        h = len(self.held())
        return CachePlan(
            rows=torch.tensor([0]), key_positions=torch.arange(h)[None], key_valid=torch.ones(1, h, dtype=torch.bool),
            query_positions=torch.arange(h, h + c)[None], write_slots=torch.zeros(1, c, dtype=torch.long), contiguous=slice(0, 1),
        )

    def ring(self, layer):
        """The held frames' K/V in time order as a one-row "ring" (the plan reads row 0, all slots)."""
        idx = self.held()
        if not idx:
            shape = (1, 0) + tuple(self.shape)
            return torch.zeros(shape), torch.zeros(shape)
        return torch.cat([self.k[layer][i] for i in idx], 1), torch.cat([self.v[layer][i] for i in idx], 1)

    def write(self, layer, plan, k, v):
        self.shape = k.shape[2:]
        for j in range(k.shape[1] // self.t):
            self.k[layer].append(k[:, j * self.t:(j + 1) * self.t])
            self.v[layer].append(v[:, j * self.t:(j + 1) * self.t])


def test_streaming_equals_block_causal_before_eviction():
    cfg, model = _tiny(sink=2, window=6, chunk=2)
    f = 8  # 4 chunks, never more than sink + window frames cached
    x = _frames(cfg, 2, f, seed=1)
    t = torch.rand(2, f) * 1000
    text = torch.randn(2, 5, cfg.transformer.text_dim)
    with torch.no_grad():
        full = model(x, t, text, chunk_frames=2)
        cache = RollingKVCache(cfg, max_batch=3)
        rows = [1, 2]  # not starting at row 0: rows are independent
        text_kv = model.text_kv(text)
        for j in range(0, f, 2):
            plan = cache.plan(rows, 2)
            out = model.forward_stream(x[:, :, j:j + 2], t[:, j:j + 2], text_kv, cache, plan, write=True)
            cache.advance(rows, 2)
            assert (out - full[:, :, j:j + 2]).abs().max().item() < 1e-4, f"chunk {j // 2}"


def test_rolling_cache_equals_dense_sink_window_reference():
    cfg, model = _tiny(sink=2, window=4, chunk=2)
    text = torch.randn(1, 5, cfg.transformer.text_dim)
    with torch.no_grad():
        text_kv = model.text_kv(text)
        ring = RollingKVCache(cfg, max_batch=1)
        oracle = ListCache(cfg)
        for j in range(12):  # 24 frames: the 4-frame window wraps around several times
            x = _frames(cfg, 1, 2, seed=100 + j)
            t = torch.full((1, 2), 1000.0 - 80 * j)
            got = model.forward_stream(x, t, text_kv, ring, ring.plan([0], 2), write=True)
            ring.advance([0], 2)
            want = model.forward_stream(x, t, text_kv, oracle, oracle.plan(2), write=True)
            oracle.n += 2
            assert (got - want).abs().max().item() < 1e-4, f"chunk {j}"


def test_thousand_chunks_flat_memory():
    cfg, model = _tiny(sink=2, window=4, chunk=2)
    text_kv = model.text_kv(torch.randn(1, 5, cfg.transformer.text_dim))
    cache = RollingKVCache(cfg, max_batch=1)
    ptrs = [k.data_ptr() for k in cache.k]
    x = _frames(cfg, 1, 2, seed=3)
    t = torch.zeros(1, 2)
    with torch.no_grad():
        for i in range(1000):
            if i == 100:
                rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
            model.forward_stream(x, t, text_kv, cache, cache.plan([0], 2), write=True)
            cache.advance([0], 2)
        grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert cache.frames[0] == 2000
    assert [k.data_ptr() for k in cache.k] == ptrs  # buffers never reallocated
    assert grown_kib < 16 * 1024, f"peak RSS grew by {grown_kib} KiB over 900 chunks"
    # positions stay window-relative: the largest query position is sink + window + chunk - 1
    assert cache.plan([0], 2).query_positions.max().item() == 2 + 4 + 1
