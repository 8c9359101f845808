"""RoPE from positions: attention scores depend only on relative frame positions, so the cache can
re-index keys to window-relative positions without changing anything but the offsets."""

import torch

from models.rope import RotaryEmbedding3D, apply_rotary


def test_scores_depend_only_on_relative_positions():
    rope = RotaryEmbedding3D(32)
    q = torch.randn(1, 2 * 4, 2, 32)  # [B, L, H, D]: 2 frames of 2x2 tokens
    k = torch.randn(1, 2 * 4, 2, 32)
    def scores(offset):
        cos, sin = rope.cos_sin(torch.tensor([[offset, offset + 3]]), 2, 2)
        return torch.einsum("blhd,bmhd->bhlm", apply_rotary(q, cos, sin), apply_rotary(k, cos, sin))
    assert torch.allclose(scores(0), scores(5000), atol=1e-3)  # far past any table length
    assert not torch.allclose(scores(0), torch.einsum("blhd,bmhd->bhlm", q, k), atol=1e-3)


def test_rotation_preserves_norms():
    rope = RotaryEmbedding3D(64)
    x = torch.randn(2, 3 * 6, 4, 64)
    cos, sin = rope.cos_sin(torch.tensor([[0, 1, 2], [7, 8, 9]]), 2, 3)
    assert torch.allclose(apply_rotary(x, cos, sin).norm(dim=-1), x.norm(dim=-1), atol=1e-4)
