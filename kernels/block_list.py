"""`BlockList`: a block-sparse attention pattern in FlexAttention's layout.

The score matrix [Lq, Lk] is cut into tiles of `block_q` query rows x `block_kv` key columns.
Per (batch, head, query block) the pattern lists the kv blocks to visit, split FlexAttention-style
into *full* blocks (every in-range entry attends: no masking needed) and *partial* blocks (a
token-level bool tile says which entries attend). Kv block indices are positions in the
**physical** K/V layout (the ring buffer), not logical time.

Invariants every constructor here guarantees (the Triton kernel relies on them):
- a full block lies entirely inside [0, Lk) (a ragged tail kv block is always partial);
- index rows are `num_kv_blocks` wide (FlexAttention's shape); the first `num` entries are used,
  in ascending block order;
- the batch and head dims are 1 (broadcast) or the real B / H; broadcast dims may be expanded
  views (stride 0), e.g. a key-padding pattern stores one query-block row for all query blocks.

Constructors: `from_key_padding` (O(Lk), no host sync), `dense`, `from_dense`, `from_mask_mod`,
`from_block_mask`; conversions: `to_dense`, `to_block_mask`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# block codes in the per-block map used by to_dense / to_block_mask
_NONE, _FULL = -2, -1

# elements of a dense [rows, Lk] slab evaluated at once by from_mask_mod (bounds builder memory)
_MASK_MOD_CHUNK_ELEMENTS = 1 << 26


@dataclass(frozen=True)
class BlockList:
    """Which (query block, kv block) tiles attend, and the token mask of the partial ones."""

    full_kv_num_blocks: torch.Tensor  # [Bm, Hm, NQ] int32: full kv blocks per query block
    full_kv_indices: torch.Tensor  # [Bm, Hm, NQ, NKV] int32: their physical kv block indices
    kv_num_blocks: torch.Tensor  # [Bm, Hm, NQ] int32: partial kv blocks per query block
    kv_indices: torch.Tensor  # [Bm, Hm, NQ, NKV] int32: their physical kv block indices
    kv_tile_ids: torch.Tensor  # [Bm, Hm, NQ, NKV] int32: tile of each partial entry (row of `tiles`)
    tiles: torch.Tensor  # [T, block_q, block_kv] bool: token mask of partial blocks (True = attend)
    q_len: int
    kv_len: int
    block_q: int
    block_kv: int

    # ---- sizes ----
    @property
    def num_q_blocks(self) -> int:
        return -(-self.q_len // self.block_q)

    @property
    def num_kv_blocks(self) -> int:
        return -(-self.kv_len // self.block_kv)

    @property
    def device(self) -> torch.device:
        return self.kv_indices.device

    def kept_fraction(self) -> float:
        """Visited tiles / all tiles (host sync; for reports and benchmarks)."""
        visited = (self.full_kv_num_blocks + self.kv_num_blocks).double().mean().item()
        return visited / self.num_kv_blocks

    # ---- constructors ----
    @classmethod
    def dense(cls, q_len: int, kv_len: int, block_q: int = 128, block_kv: int = 128,
              device: torch.device | str | None = None) -> "BlockList":
        """Every query attends every key (only a ragged kv tail block is partial)."""
        valid = torch.ones(1, 1, 1, kv_len, dtype=torch.bool, device=device)
        return cls.from_key_padding(valid, q_len, block_q, block_kv)

    @classmethod
    def from_key_padding(cls, kv_valid: torch.Tensor, q_len: int, block_q: int = 128,
                         block_kv: int = 128) -> "BlockList":
        """A pattern where every query sees the same keys: `kv_valid` bool [Bm, Hm, 1, Lk] or [Bm, Lk].

        Costs O(Lk) work and memory and never syncs with the device: one tile per kv block
        (its columns broadcast over the query rows), index rows computed once and expanded.
        """
        if kv_valid.dim() == 2:
            kv_valid = kv_valid[:, None, None, :]
        if kv_valid.dim() != 4 or kv_valid.shape[2] != 1:
            raise ValueError(f"key-padding mask must be [B, Lk] or [B, H, 1, Lk], got {tuple(kv_valid.shape)}")
        kv_valid = kv_valid.to(torch.bool)
        bm, hm, _, kv_len = kv_valid.shape
        nkv = -(-kv_len // block_kv)
        padded = torch.zeros(bm, hm, nkv * block_kv, dtype=torch.bool, device=kv_valid.device)
        padded[..., :kv_len] = kv_valid[:, :, 0]
        cols = padded.view(bm, hm, nkv, block_kv)  # [Bm, Hm, NKV, BK]
        full = cols.all(-1)  # [Bm, Hm, NKV]
        partial = cols.any(-1) & ~full
        tile_map = torch.arange(bm * hm * nkv, dtype=torch.int32, device=kv_valid.device).view(bm, hm, 1, nkv)
        tiles = cols.reshape(bm * hm * nkv, 1, block_kv).expand(-1, block_q, -1)  # [T, BQ, BK] (view)
        return assemble_blocks(full[:, :, None], partial[:, :, None], tile_map, tiles, q_len, kv_len, block_q, block_kv)

    @classmethod
    def from_dense(cls, mask: torch.Tensor, q_len: int | None = None, kv_len: int | None = None,
                   block_q: int = 128, block_kv: int = 128) -> "BlockList":
        """From a bool mask broadcastable to [B, H, Lq, Lk] (True = attend).

        A mask with a broadcast query dim ([.., 1, Lk], e.g. key validity) takes the O(Lk)
        key-padding path; a full [.., Lq, Lk] mask costs one pass over it plus a host sync.
        """
        while mask.dim() < 4:
            mask = mask.unsqueeze(0)
        mask = mask.to(torch.bool)
        q_len = q_len if q_len is not None else mask.shape[-2]
        kv_len = kv_len if kv_len is not None else mask.shape[-1]
        if mask.shape[-1] != kv_len and mask.shape[-1] != 1:
            raise ValueError(f"mask has {mask.shape[-1]} key columns, attention has {kv_len}")
        mask = mask.expand(*mask.shape[:2], mask.shape[2], kv_len)
        if mask.shape[-2] == 1:
            return cls.from_key_padding(mask, q_len, block_q, block_kv)
        if mask.shape[-2] != q_len:
            raise ValueError(f"mask has {mask.shape[-2]} query rows, attention has {q_len}")
        return _from_dense_rows([mask], q_len, kv_len, block_q, block_kv)

    @classmethod
    def from_mask_mod(cls, mask_mod: MaskMod, q_len: int, kv_len: int, batch: int = 1, heads: int = 1,
                      block_q: int = 128, block_kv: int = 128,
                      device: torch.device | str | None = None) -> "BlockList":
        """Evaluate a mask_mod `(b, h, q_idx, kv_idx) -> bool` on broadcast index tensors.

        batch / heads = 1 when the mask does not depend on b / h. Evaluated in slabs of whole
        query blocks, so builder memory stays bounded at Wan shapes.
        """
        rows_per_slab = max(1, _MASK_MOD_CHUNK_ELEMENTS // max(1, batch * heads * kv_len * block_q)) * block_q
        b = torch.arange(batch, device=device).view(-1, 1, 1, 1)
        h = torch.arange(heads, device=device).view(1, -1, 1, 1)
        kv = torch.arange(kv_len, device=device).view(1, 1, 1, -1)
        slabs = []
        for start in range(0, q_len, rows_per_slab):
            q = torch.arange(start, min(q_len, start + rows_per_slab), device=device).view(1, 1, -1, 1)
            slab = torch.as_tensor(mask_mod(b, h, q, kv), device=device).to(torch.bool)
            slabs.append(slab.expand(batch, heads, q.shape[2], kv_len))
        return _from_dense_rows(slabs, q_len, kv_len, block_q, block_kv)

    @classmethod
    def from_block_mask(cls, block_mask) -> "BlockList":
        """From a FlexAttention `BlockMask` (its mask_mod is evaluated on its partial blocks only)."""
        q_len, kv_len = block_mask.seq_lengths
        block_q, block_kv = block_mask.BLOCK_SIZE
        nq, nkv = -(-q_len // block_q), -(-kv_len // block_kv)
        full = _ordered_to_map(block_mask.full_kv_num_blocks, block_mask.full_kv_indices, nkv)[..., :nq, :]
        partial = _ordered_to_map(block_mask.kv_num_blocks, block_mask.kv_indices, nkv)[..., :nq, :]
        if kv_len % block_kv:  # a full block may not be ragged: demote the tail to partial
            partial[..., -1] |= full[..., -1]
            full[..., -1] = False
        where = partial.nonzero()  # [P, 4] (b, h, q block, kv block)
        tiles = _eval_tiles(block_mask.mask_mod, where, q_len, kv_len, block_q, block_kv)
        tile_map = torch.full(partial.shape, -1, dtype=torch.int32, device=partial.device)
        tile_map[partial] = torch.arange(where.shape[0], dtype=torch.int32, device=partial.device)
        return assemble_blocks(full, partial, tile_map, tiles, q_len, kv_len, block_q, block_kv)

    # ---- conversions ----
    def block_codes(self) -> torch.Tensor:
        """[Bm, Hm, NQ, NKV] int32 per tile: -2 skipped, -1 full, t >= 0 partial with tile t."""
        bm, hm, nq, nkv = self.kv_indices.shape
        codes = torch.full((bm, hm, nq, nkv + 1), _NONE, dtype=torch.int32, device=self.device)
        slot = torch.arange(nkv, device=self.device)
        full_cols = torch.where(slot < self.full_kv_num_blocks[..., None], self.full_kv_indices.long(), nkv)
        codes.scatter_(-1, full_cols, _FULL)
        part_cols = torch.where(slot < self.kv_num_blocks[..., None], self.kv_indices.long(), nkv)
        codes.scatter_(-1, part_cols, self.kv_tile_ids)
        return codes[..., :nkv]

    def to_dense(self) -> torch.Tensor:
        """bool [Bm, Hm, Lq, Lk] (True = attend): the exact pattern the kernel computes."""
        codes = self.block_codes()  # [Bm, Hm, NQ, NKV]
        bm, hm, nq, nkv = codes.shape
        if self.tiles.shape[0]:
            tile = self.tiles[codes.clamp(min=0)]  # [Bm, Hm, NQ, NKV, BQ, BK]
        else:
            tile = torch.zeros(bm, hm, nq, nkv, self.block_q, self.block_kv, dtype=torch.bool, device=self.device)
        code = codes[..., None, None]
        dense = (code == _FULL) | ((code >= 0) & tile)
        dense = dense.permute(0, 1, 2, 4, 3, 5).reshape(bm, hm, nq * self.block_q, nkv * self.block_kv)
        return dense[..., : self.q_len, : self.kv_len]

    @functools.cached_property
    def dense_mask(self) -> torch.Tensor:
        """`to_dense()`, computed once per BlockList (the SDPA path of a pattern reused every layer)."""
        return self.to_dense()

    def to_block_mask(self):
        """The same pattern as a FlexAttention `BlockMask` (partial tiles looked up by its mask_mod)."""
        from torch.nn.attention.flex_attention import BlockMask

        codes = self.block_codes()
        tiles = self.tiles if self.tiles.shape[0] else torch.zeros(1, self.block_q, self.block_kv,
                                                                   dtype=torch.bool, device=self.device)
        bq, bk, nq, nkv = self.block_q, self.block_kv, self.num_q_blocks, self.num_kv_blocks
        per_batch, per_head = codes.shape[0] > 1, codes.shape[1] > 1

        def tile_lookup(b, h, q_idx, kv_idx):
            qb = (q_idx // bq).clamp(max=nq - 1)
            kb = (kv_idx // bk).clamp(max=nkv - 1)
            code = codes[b if per_batch else 0, h if per_head else 0, qb, kb]
            inside = tiles[code.clamp(min=0), q_idx % bq, kv_idx % bk]
            return (code == _FULL) | ((code >= 0) & inside)

        def contiguous(t):
            return t.contiguous()

        return BlockMask.from_kv_blocks(
            contiguous(self.kv_num_blocks), contiguous(self.kv_indices),
            contiguous(self.full_kv_num_blocks), contiguous(self.full_kv_indices),
            BLOCK_SIZE=(bq, bk), mask_mod=tile_lookup, seq_lengths=(self.q_len, self.kv_len),
        )

    def validate(self) -> "BlockList":
        """Check the invariants (host sync); raises ValueError. For tests and hand-built lists."""
        nq, nkv = self.num_q_blocks, self.num_kv_blocks
        if self.kv_indices.shape[-2:] != (nq, nkv) or self.full_kv_indices.shape[-2:] != (nq, nkv):
            raise ValueError(f"index rows must be [.., {nq}, {nkv}], got {tuple(self.kv_indices.shape)}")
        if self.tiles.shape[1:] != (self.block_q, self.block_kv):
            raise ValueError(f"tiles must be [T, {self.block_q}, {self.block_kv}], got {tuple(self.tiles.shape)}")
        slot = torch.arange(nkv, device=self.device)
        used_full = slot < self.full_kv_num_blocks[..., None]
        if self.kv_len % self.block_kv and (used_full & (self.full_kv_indices == nkv - 1)).any():
            raise ValueError("the ragged tail kv block must be partial, not full")
        used_part = slot < self.kv_num_blocks[..., None]
        for idx, used in ((self.full_kv_indices, used_full), (self.kv_indices, used_part)):
            if (used & ((idx < 0) | (idx >= nkv))).any():
                raise ValueError("kv block index out of range")
        if (used_part & ((self.kv_tile_ids < 0) | (self.kv_tile_ids >= self.tiles.shape[0]))).any():
            raise ValueError("partial block tile id out of range")
        return self


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def assemble_blocks(full: torch.Tensor, partial: torch.Tensor, tile_map: torch.Tensor, tiles: torch.Tensor,
              q_len: int, kv_len: int, block_q: int, block_kv: int) -> BlockList:
    """Order per-tile maps into index rows. full/partial bool, tile_map int32: [Bm, Hm, NQ or 1, NKV]."""
    nq = -(-q_len // block_q)

    def ordered(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        num = blocks.sum(-1, dtype=torch.int32)
        order = torch.argsort(blocks.to(torch.int8), dim=-1, descending=True, stable=True)
        return num, order

    full_num, full_order = ordered(full)
    part_num, part_order = ordered(partial)
    tile_ids = torch.gather(tile_map.expand_as(partial).to(torch.int32), -1, part_order)
    bm, hm, rows, nkv = full.shape

    def rows_to_nq(t: torch.Tensor) -> torch.Tensor:  # a single broadcast row becomes a stride-0 view
        return t.expand(bm, hm, nq, *t.shape[3:]) if rows == 1 else t

    return BlockList(
        full_kv_num_blocks=rows_to_nq(full_num),
        full_kv_indices=rows_to_nq(full_order.to(torch.int32)),
        kv_num_blocks=rows_to_nq(part_num),
        kv_indices=rows_to_nq(part_order.to(torch.int32)),
        kv_tile_ids=rows_to_nq(tile_ids),
        tiles=tiles,
        q_len=q_len, kv_len=kv_len, block_q=block_q, block_kv=block_kv,
    )


def _from_dense_rows(slabs: list[torch.Tensor], q_len: int, kv_len: int, block_q: int, block_kv: int) -> BlockList:
    """Classify tiles of dense bool slabs [Bm, Hm, rows, Lk] (each a whole number of query blocks
    except the last) and gather the partial tiles."""
    nkv = -(-kv_len // block_kv)
    fulls, partials, tile_maps, tiles = [], [], [], []
    n_tiles = 0
    for slab in slabs:
        bm, hm, rows, _ = slab.shape
        nq = -(-rows // block_q)
        # pad: repeat the last query row (no effect on all/any), kv columns with False
        row_idx = torch.arange(nq * block_q, device=slab.device).clamp(max=rows - 1)
        padded = torch.zeros(bm, hm, nq * block_q, nkv * block_kv, dtype=torch.bool, device=slab.device)
        padded[..., :kv_len] = slab[:, :, row_idx]
        grid = padded.view(bm, hm, nq, block_q, nkv, block_kv).permute(0, 1, 2, 4, 3, 5)  # [Bm,Hm,NQ,NKV,BQ,BK]
        full = grid.all(-1).all(-1)
        partial = grid.any(-1).any(-1) & ~full
        tile_map = torch.full(partial.shape, -1, dtype=torch.int32, device=slab.device)
        count = int(partial.sum())
        tile_map[partial] = torch.arange(n_tiles, n_tiles + count, dtype=torch.int32, device=slab.device)
        tiles.append(grid[partial])  # [P, BQ, BK]
        n_tiles += count
        fulls.append(full), partials.append(partial), tile_maps.append(tile_map)
    return assemble_blocks(torch.cat(fulls, 2), torch.cat(partials, 2), torch.cat(tile_maps, 2), torch.cat(tiles),
                     q_len, kv_len, block_q, block_kv)


def _ordered_to_map(num: torch.Tensor | None, indices: torch.Tensor | None, nkv: int) -> torch.Tensor:
    """FlexAttention index rows -> bool per-tile map [Bm, Hm, NQ, NKV]."""
    if num is None:
        return torch.zeros(1, 1, 1, nkv, dtype=torch.bool)
    slot = torch.arange(indices.shape[-1], device=indices.device)
    cols = torch.where(slot < num[..., None], indices.long(), nkv)
    out = torch.zeros(*indices.shape[:-1], nkv + 1, dtype=torch.bool, device=indices.device)
    out.scatter_(-1, cols, True)
    return out[..., :nkv]


def _eval_tiles(mask_mod: MaskMod, where: torch.Tensor, q_len: int, kv_len: int,
                block_q: int, block_kv: int) -> torch.Tensor:
    """mask_mod on the tiles at `where` [P, 4] (b, h, q block, kv block) -> bool [P, BQ, BK]."""
    device = where.device
    b = where[:, 0].view(-1, 1, 1)
    h = where[:, 1].view(-1, 1, 1)
    q = (where[:, 2] * block_q).view(-1, 1, 1) + torch.arange(block_q, device=device).view(1, -1, 1)
    kv = (where[:, 3] * block_kv).view(-1, 1, 1) + torch.arange(block_kv, device=device).view(1, 1, -1)
    inside = (q < q_len) & (kv < kv_len)
    out = torch.as_tensor(mask_mod(b, h, q.clamp(max=q_len - 1), kv.clamp(max=kv_len - 1)), device=device)
    return (out.to(torch.bool) & inside).expand(where.shape[0], block_q, block_kv).contiguous()
