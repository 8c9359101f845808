"""BlockList <-> dense mask <-> FlexAttention BlockMask round trips, and its invariants."""

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask, create_mask, flex_attention

from kernels import BlockList, reference_attention


def _random_mask(b, h, lq, lk, seed, p=0.5):
    return torch.rand(b, h, lq, lk, generator=torch.Generator().manual_seed(seed)) < p


@pytest.mark.parametrize("shape", [(1, 1, 40, 70), (2, 3, 33, 16), (1, 2, 64, 64)])
def test_dense_round_trip(shape):
    mask = _random_mask(*shape, seed=sum(shape))
    mask[..., 0:16, 0:16] = True  # at least one full block
    bl = BlockList.from_dense(mask, block_q=16, block_kv=16).validate()
    assert torch.equal(bl.to_dense(), mask)
    assert int(bl.full_kv_num_blocks.sum()) >= 1


def test_block_structure_matches_mask():
    mask = torch.zeros(1, 1, 32, 48, dtype=torch.bool)
    mask[..., :16, :32] = True  # q block 0: kv blocks 0, 1 full
    mask[..., 16:, 40:44] = True  # q block 1: kv block 2 partial
    bl = BlockList.from_dense(mask, block_q=16, block_kv=16)
    assert bl.full_kv_num_blocks[0, 0].tolist() == [2, 0]
    assert bl.kv_num_blocks[0, 0].tolist() == [0, 1]
    assert bl.full_kv_indices[0, 0, 0, :2].tolist() == [0, 1]
    assert bl.kv_indices[0, 0, 1, 0].item() == 2
    assert bl.kept_fraction() == pytest.approx(3 / 6)


def test_ragged_tail_block_is_never_full():
    bl = BlockList.dense(20, 40, block_q=16, block_kv=16).validate()
    assert bl.full_kv_num_blocks[0, 0].tolist() == [2, 2]  # blocks 0, 1; block 2 (40 % 16 != 0) partial
    assert bl.kv_indices[0, 0, :, 0].tolist() == [2, 2]
    assert bl.to_dense().all()
    broken = BlockList(**{**bl.__dict__, "full_kv_num_blocks": bl.full_kv_num_blocks + 1,
                          "full_kv_indices": torch.arange(3, dtype=torch.int32).expand(1, 1, 2, 3)})
    with pytest.raises(ValueError, match="tail"):
        broken.validate()


def test_key_padding_is_linear_in_kv_len():
    """[B, 1, 1, Lk] masks take the O(Lk) path: no per-query storage, rows shared by stride 0."""
    lq, lk = 4096, 1000
    valid = torch.rand(2, 1, 1, lk, generator=torch.Generator().manual_seed(0)) > 0.3
    bl = BlockList.from_dense(valid, q_len=lq, kv_len=lk, block_q=128, block_kv=64)
    nkv = bl.num_kv_blocks
    assert bl.tiles.untyped_storage().nbytes() <= 2 * nkv * 64
    assert bl.kv_indices.stride(2) == 0 and bl.full_kv_indices.stride(2) == 0
    dense = bl.to_dense()
    assert torch.equal(dense, valid.expand(2, 1, lq, lk))


def test_block_mask_round_trip():
    mask = _random_mask(2, 1, 50, 40, seed=3)
    mask[..., 32:, :32] = True
    bl = BlockList.from_dense(mask, block_q=16, block_kv=16)
    block_mask = bl.to_block_mask()
    assert block_mask.BLOCK_SIZE == (16, 16) and block_mask.seq_lengths == (50, 40)
    # the BlockMask's mask_mod reproduces the token pattern
    assert torch.equal(create_mask(block_mask.mask_mod, 2, 1, 50, 40), mask)
    back = BlockList.from_block_mask(block_mask).validate()
    assert torch.equal(back.to_dense(), mask)
    assert torch.equal(back.full_kv_num_blocks, bl.full_kv_num_blocks)


def test_from_flex_created_block_mask():
    def mod(b, h, q, kv):
        return (q // 8 >= kv // 8) & (kv % 3 != 1)

    block_mask = create_block_mask(mod, None, None, 48, 48, device="cpu", BLOCK_SIZE=16)
    bl = BlockList.from_block_mask(block_mask).validate()
    assert torch.equal(bl.to_dense()[0, 0], create_mask(mod, 1, 1, 48, 48)[0, 0])


def test_block_mask_drives_flex_attention_like_the_reference():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, n, 16, generator=g) for n in (40, 56, 56))
    mask = _random_mask(1, 1, 40, 56, seed=4)
    bl = BlockList.from_dense(mask, block_q=16, block_kv=16)
    out = flex_attention(q, k, v, block_mask=bl.to_block_mask())
    ref = reference_attention(q, k, v, block_list=bl)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_from_mask_mod_matches_direct_evaluation_in_slabs(monkeypatch):
    import kernels.block_list as block_list_module

    monkeypatch.setattr(block_list_module, "_MASK_MOD_CHUNK_ELEMENTS", 1000)  # force several slabs

    def mod(b, h, q, kv):
        return ((q + kv + h) % 5 != 0) & (kv <= q + 7 * b)

    bl = BlockList.from_mask_mod(mod, 45, 37, batch=2, heads=2, block_q=16, block_kv=8)
    expected = create_mask(mod, 2, 2, 45, 37)
    assert torch.equal(bl.to_dense(), expected)
