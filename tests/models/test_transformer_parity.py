"""CausalWanTransformer in bidirectional mode equals diffusers' WanTransformer3DModel (same weights)."""

import pytest
import torch

from models import CausalWanTransformer

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def saved_diffusers_model(tmp_path_factory):
    torch.manual_seed(0)
    ref = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=16, out_channels=16,
        text_dim=64, freq_dim=32, ffn_dim=128, num_layers=2, rope_max_seq_len=32,
    ).eval()
    # random (not zero-initialised) norms and tables so every term of the forward is exercised
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path_factory.mktemp("wan") / "transformer"
    ref.save_pretrained(path)
    return ref, path


def _inputs(b=2, f=5, h=8, w=12):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, 16, f, h, w, generator=g)
    text = torch.randn(b, 7, 64, generator=g)
    return x, text


def test_parity_scalar_timestep(saved_diffusers_model):
    ref, path = saved_diffusers_model
    ours = CausalWanTransformer.from_pretrained(path).eval()
    x, text = _inputs()
    t = torch.tensor([999.0, 321.0])
    with torch.no_grad():
        expected = ref(x, t, text, return_dict=False)[0]
        got = ours(x, t, text)
    assert got.shape == expected.shape == x.shape
    assert (got - expected).abs().max().item() <= 1e-4


def test_parity_per_frame_timestep(saved_diffusers_model):
    """Our per-frame [B, F] timestep equals diffusers' per-token [B, F*h*w] form."""
    ref, path = saved_diffusers_model
    ours = CausalWanTransformer.from_pretrained(path).eval()
    x, text = _inputs()
    b, _, f, h, w = x.shape
    t = torch.rand(b, f) * 1000
    tokens = (h // 2) * (w // 2)
    with torch.no_grad():
        expected = ref(x, t.repeat_interleave(tokens, dim=1), text, return_dict=False)[0]
        got = ours(x, t, text)
    assert (got - expected).abs().max().item() <= 1e-4


def test_save_load_roundtrip(saved_diffusers_model, tmp_path):
    _, path = saved_diffusers_model
    ours = CausalWanTransformer.from_pretrained(path).eval()
    ours.save_pretrained(tmp_path / "t")
    again = CausalWanTransformer.from_pretrained(tmp_path / "t").eval()
    x, text = _inputs(1, 2, 4, 4)
    with torch.no_grad():
        assert torch.equal(ours(x, torch.tensor([500.0]), text), again(x, torch.tensor([500.0]), text))
    # diffusers loads our folder too
    back = diffusers.WanTransformer3DModel.from_pretrained(tmp_path / "t").eval()
    with torch.no_grad():
        d = back(x, torch.tensor([500.0]), text, return_dict=False)[0]
        assert (d - ours(x, torch.tensor([500.0]), text)).abs().max().item() <= 1e-4
