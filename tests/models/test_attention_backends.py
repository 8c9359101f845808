"""The tiny model streams the same latents with the Triton attention backend as with SDPA."""

import pytest
import torch

import kernels.triton_attention as triton_attention


@pytest.fixture(scope="module")
def generator():
    from models import load_generator

    return load_generator("tiny", device="cpu", max_batch=1)


def _rollout(generator, backend: str, chunks: int) -> torch.Tensor:
    """`chunks` chunks of one stream (one denoising step each, to keep the interpreter cheap), every
    attention forced to `backend` (what `load_generator(attn=...)` sets)."""
    generator.transformer.attn_backend = backend
    stream = generator.open_stream("a red circle on a blue background", seed=7)
    try:
        return torch.cat([generator.rollout_chunk([stream], exit_step=0) for _ in range(chunks)], dim=2)
    finally:
        generator.close_stream(stream)


@pytest.mark.slow
def test_tiny_stream_with_triton_equals_sdpa(generator, monkeypatch):
    calls = []
    forward = triton_attention.sparse_attention_forward
    monkeypatch.setattr(triton_attention, "sparse_attention_forward",
                        lambda *args, **kw: calls.append(args[3]) or forward(*args, **kw))
    # sink 2 + window 4 frames, chunks of 2: chunk 1 sees an empty ring, chunk 4 a full cache
    chunks = 4
    sdpa = _rollout(generator, "sdpa", chunks)
    assert not calls
    triton = _rollout(generator, "triton", chunks)
    assert calls, "the Triton kernel was never called"
    assert any(bl.kv_num_blocks.any() for bl in calls)  # some calls masked empty ring slots
    assert sdpa.shape == triton.shape and sdpa.std() > 0
    torch.testing.assert_close(triton, sdpa, atol=1e-4, rtol=1e-4)
