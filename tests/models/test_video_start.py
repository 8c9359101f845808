"""The video-start embedding (TransformerConfig.video_start): a learned vector added to the time embedding of a
video's first latent frame. It reaches the clip forward, the streaming forward (through the cache's plan) and the same frames in
both; a scene cut's chunk and every later chunk go without it; a model that gains it at zero is unchanged."""

import json

import numpy as np
import torch

from models.config import TransformerConfig, apply_overrides, preset
from models.kv_cache import RollingKVCache
from models.transformer import CausalWanTransformer


def _model(video_start=True, seed=0):
    cfg = apply_overrides(preset("tiny"), {"stream": {"sink_frames": 2, "window_frames": 4, "chunk_frames": 2},
                                           "transformer": {"video_start": video_start}})
    torch.manual_seed(seed)
    model = CausalWanTransformer(cfg.transformer).eval()
    if video_start:
        with torch.no_grad():
            model.video_start_embedding.normal_()
    return cfg, model


def _clip(cfg, b, f, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, cfg.transformer.in_channels, f, cfg.latent_height, cfg.latent_width, generator=g)


def test_clip_forward_marks_frame_zero_of_the_rows_asked():
    cfg, model = _model()
    x, t, text = _clip(cfg, 2, 4), torch.rand(2) * 1000, torch.randn(2, 5, cfg.transformer.text_dim)
    with torch.no_grad():
        plain = model(x, t, text, chunk_frames=2)
        marked = model(x, t, text, chunk_frames=2, video_start=torch.tensor([True, False]))
    assert (marked[0, :, :2] - plain[0, :, :2]).abs().max() > 1e-3  # row 0's first chunk sees the mark
    assert not torch.allclose(marked[0, :, 2:], plain[0, :, 2:], atol=1e-5)  # later chunks attend to it
    assert torch.allclose(marked[1], plain[1], atol=1e-6)  # row 1 is not a video start


def test_streaming_marks_the_same_frames_as_the_clip_forward():
    cfg, model = _model()
    f = 6
    x, t, text = _clip(cfg, 2, f), torch.rand(2, f) * 1000, torch.randn(2, 5, cfg.transformer.text_dim)
    with torch.no_grad():
        full = model(x, t, text, chunk_frames=2, video_start=True)
        cache = RollingKVCache(cfg, max_batch=2)
        text_kv = model.text_kv(text)
        for j in range(0, f, 2):
            plan = cache.plan([0, 1], 2)
            assert plan.video_start is None if j else plan.video_start.tolist() == [[True, False], [True, False]]
            out = model.forward_stream(x[:, :, j:j + 2], t[:, j:j + 2], text_kv, cache, plan, write=True)
            cache.advance([0, 1], 2)
            assert (out - full[:, :, j:j + 2]).abs().max().item() < 1e-4, f"chunk {j // 2}"


def test_a_cut_row_and_replayed_frames():
    cfg, _ = _model()
    cache = RollingKVCache(cfg, max_batch=2)
    cache.advance([0, 1], 4)
    assert cache.plan([0, 1], 2).video_start is None
    assert cache.replay_plan(0, [0, 1], upto=0).video_start.tolist() == [[True, False]]  # the re-cache replays frame 0
    cache.reset(1)  # a new stream in the row, or a scene cut: a new video
    assert cache.plan([1], 2).video_start.tolist() == [[True, False]]
    assert cache.plan([0], 2).video_start is None  # the other row goes on


def test_without_the_option_marks_change_nothing():
    cfg, model = _model(video_start=False)
    x, t, text = _clip(cfg, 1, 4), torch.rand(1) * 1000, torch.randn(1, 5, cfg.transformer.text_dim)
    with torch.no_grad():
        assert torch.equal(model(x, t, text, video_start=True), model(x, t, text))
    assert not any("video_start" in k for k in model.state_dict())


def test_config_round_trip_keeps_wan_keys_exact():
    assert "video_start" not in TransformerConfig().to_diffusers()
    d = TransformerConfig(video_start=True).to_diffusers()
    assert d["video_start"] is True
    assert TransformerConfig.from_dict(json.loads(json.dumps(d))).video_start is True


def test_saved_and_loaded(tmp_path):
    _, model = _model()
    model.save_pretrained(tmp_path)
    loaded = CausalWanTransformer.from_pretrained(tmp_path)
    assert loaded.config.video_start
    assert torch.equal(loaded.video_start_embedding, model.video_start_embedding)


def test_generator_marks_the_first_chunk_and_the_chunk_after_a_cut(monkeypatch):
    """Through the real streaming loop: the first chunk of a text stream and a start image's commit carry the mark;
    so does the chunk after a scene cut (a new video); the chunks after the first do not."""
    from models.generator import load_generator

    gen = load_generator("tiny", device="cpu", max_batch=2)
    cfg = apply_overrides(gen.cfg, {"transformer": {"video_start": True}})
    gen.transformer = CausalWanTransformer(cfg.transformer).eval()
    gen.cfg = cfg
    seen = []
    real = gen.transformer.forward_stream

    def spy(x, t, text_kv, cache, plan, write=False, **kw):
        seen.append((write, None if plan.video_start is None else plan.video_start.tolist()))
        return real(x, t, text_kv, cache, plan, write=write, **kw)

    monkeypatch.setattr(gen.transformer, "forward_stream", spy)
    s = gen.open_stream("a red circle", seed=0)
    gen.step([s])
    assert all(marks == [[True] + [False] * (cfg.stream.chunk_frames - 1)] for _, marks in seen)
    seen.clear()
    gen.step([s])
    assert all(marks is None for _, marks in seen)
    gen.set_prompt(s, "a blue square", cut=True)
    seen.clear()
    gen.step([s])
    assert seen and all(marks == [[True] + [False] * (cfg.stream.chunk_frames - 1)] for _, marks in seen)
    seen.clear()
    gen.step([s])
    assert seen and all(marks is None for _, marks in seen)
    gen.close_stream(s)
    gen.info.supports_image = True  # the tiny preset is text-only; the image path is the shapes family's
    image = np.zeros((gen.info.height, gen.info.width, 3), np.uint8)
    seen.clear()
    s = gen.open_stream("a red circle", seed=0, image=image)
    assert seen == [(True, [[True]])]  # the image's commit: the video's first latent frame
    seen.clear()
    gen.step([s])
    assert seen and all(marks is None for _, marks in seen)
