"""Streaming with the fused kernel forced equals the composed (rotate + concatenate) path.

Generator level, on the tiny model (sink 2 + window 4 latent frames, chunks of 2): two streams
batched in one cache, four chunks each, so the ring fills and wraps (8 frames > 6 slots).
"""

import pytest
import torch

import kernels.stream_kernel as stream_kernel


@pytest.fixture(scope="module")
def generator():
    from models import load_generator

    return load_generator("tiny", device="cpu", max_batch=3)


def _rollout(generator, attn, chunks=4):
    generator.transformer.attn_backend = attn
    streams = [generator.open_stream("a red circle on a blue background", seed=7),
               generator.open_stream("two green squares", seed=8)]
    try:  # one denoising step per chunk keeps the interpreter cheap; the commit pass runs too
        return torch.cat([generator.rollout_chunk(streams, exit_step=0) for _ in range(chunks)], dim=2)
    finally:
        for s in streams:
            generator.close_stream(s)
        generator.transformer.attn_backend = None


@pytest.mark.slow
def test_fused_stream_equals_composed(generator, monkeypatch):
    calls = []
    real = stream_kernel.stream_attention_forward
    monkeypatch.setattr(stream_kernel, "stream_attention_forward", lambda c, *a: calls.append(c) or real(c, *a))
    composed = _rollout(generator, "sdpa")
    assert not calls
    fused = _rollout(generator, "fused")
    # 4 chunks x (1 step + 1 commit) x 2 layers, each call covering both streams
    assert len(calls) == 16 and all(c.q.shape[0] == 2 for c in calls)
    assert calls[0].slot_valid.sum() == 0 and calls[-1].slot_valid.all()  # empty ring ... full ring
    assert composed.shape == fused.shape and composed.std() > 0.1
    torch.testing.assert_close(fused, composed, atol=1e-4, rtol=1e-4)


def test_load_generator_rejects_an_unknown_backend():
    from models import load_generator

    with pytest.raises(ValueError, match="unknown attention backend 'fast'"):
        load_generator("tiny", device="cpu", max_batch=1, attn="fast")


@pytest.mark.slow
def test_spatial_locality_fused_equals_composed_and_changes_the_stream(generator, monkeypatch):
    dense = _rollout(generator, "sdpa")
    monkeypatch.setattr(generator.cache, "local_radius", 1)
    monkeypatch.setattr(generator.cache, "local_recent", 1)
    composed = _rollout(generator, "sdpa")
    fused = _rollout(generator, "fused")
    torch.testing.assert_close(fused, composed, atol=1e-4, rtol=1e-4)
    assert (composed - dense).abs().max() > 1e-4  # old frames were pruned
    torch.testing.assert_close(composed[:, :, :4], dense[:, :, :4])  # no old window frames yet in chunks 1-2
