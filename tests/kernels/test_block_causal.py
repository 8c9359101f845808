"""The block-causal training pattern as a BlockList, through the Triton kernel and FlexAttention."""

import pytest
import torch

import kernels
from kernels import reference_attention
from kernels.masks import block_causal_block_list


def _dense_block_causal(frames, tokens, chunk):
    """The dense mask the model used to build: chunk of key <= chunk of query."""
    c = torch.arange(frames) // chunk
    return (c[:, None] >= c[None, :]).repeat_interleave(tokens, 0).repeat_interleave(tokens, 1)


@pytest.mark.parametrize("frames, tokens, chunk, block", [(7, 12, 2, 32), (6, 16, 3, 16), (5, 20, 1, 16)])
def test_block_list_is_the_block_causal_mask_and_skips_the_upper_tiles(frames, tokens, chunk, block):
    bl = block_causal_block_list(frames, tokens, chunk, "cpu", block).validate()
    assert torch.equal(bl.to_dense()[0, 0], _dense_block_causal(frames, tokens, chunk))
    assert bl.kept_fraction() < 1  # some tiles above the chunk diagonal are never visited
    assert block_causal_block_list(frames, tokens, chunk, "cpu", block) is bl  # built once per shape


@pytest.mark.parametrize("backend", ["triton", "flex", "sdpa"])
def test_backends_match_the_reference_with_gradients(backend):
    bl = block_causal_block_list(6, 12, 2, "cpu", 32)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 72, 32, generator=g).requires_grad_(True) for _ in range(3))
    ref = reference_attention(q, k, v, block_list=bl)
    if backend == "flex":  # FlexAttention has no CPU backward: outputs only
        out = kernels.attention(q.detach(), k.detach(), v.detach(), block_list=bl, backend=backend)
        torch.testing.assert_close(out, ref.detach(), atol=2e-5, rtol=2e-5)
        return
    out = kernels.attention(q, k, v, block_list=bl, backend=backend)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)
    grad = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)


def test_block_causal_model_forward_through_triton_equals_sdpa():
    from models.config import preset
    from models.transformer import CausalWanTransformer

    cfg = preset("tiny")
    torch.manual_seed(0)
    model = CausalWanTransformer(cfg.transformer).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, cfg.transformer.in_channels, 6, cfg.latent_height, cfg.latent_width, generator=g)
    t = torch.tensor([[900.0] * 2 + [500.0] * 2 + [100.0] * 2])
    text = torch.randn(1, 4, cfg.transformer.text_dim, generator=g)
    with torch.no_grad():
        model.attn_backend = "sdpa"
        want = model(x, t, text, chunk_frames=2)
        model.attn_backend = "triton"
        got = model(x, t, text, chunk_frames=2)
        bidirectional = model(x, t, text)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert (bidirectional - want).abs().max() > 1e-3  # the pattern mattered
