"""Block-sparse attention forward in Triton, over the physical (ring-buffer) K/V layout.

One program per (query tile of BLOCK_M rows, batch x head). It walks the `BlockList` row of
its query block: first the full kv blocks (no masking at all), then the partial ones (their bool
tile masks the scores), with an online softmax in fp32 (exp2 with log2(e) folded into the scale).
Inputs fp16 / bf16 / fp32; fp16 and bf16 dots run on the tensor cores with fp32 accumulation;
fp32 inputs use IEEE fp32 dots. Plain pointer arithmetic only (no block pointers, which the
Triton interpreter does not implement). Under `TRITON_INTERPRET=1` bf16 is upcast to fp32 before
`tl.dot` (the interpreter's bf16 dot is wrong).

A query row with nothing to attend writes zeros. Importing this module imports triton: set
`TRITON_INTERPRET=1` first when running on a CPU.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from kernels.block_list import BlockList

LOG2E = 1.4426950408889634


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def _attend_tile(acc, l_i, m_i, q, k_base, v_base, tile_base, start_n, row_in_tile,
                 offs_n, offs_d, kv_len, stride_kn, stride_kd, stride_vn, stride_vd,
                 stride_tm, stride_tn, qk_scale,
                 MASKED: tl.constexpr, EVEN_D: tl.constexpr, HEAD_DIM: tl.constexpr,
                 BLOCK_M: tl.constexpr, DOT_FP32: tl.constexpr, IEEE: tl.constexpr):
    """One [BLOCK_M, BLOCK_N] step of the online softmax; returns the updated (acc, l_i, m_i)."""
    cols = start_n + offs_n  # [BLOCK_N]
    k_ptrs = k_base + cols[:, None] * stride_kn + offs_d[None, :] * stride_kd  # [BLOCK_N, BLOCK_D]
    v_ptrs = v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd  # [BLOCK_N, BLOCK_D]
    if MASKED:
        col_ok = cols < kv_len
        if EVEN_D:
            k = tl.load(k_ptrs, mask=col_ok[:, None], other=0.0)
            v = tl.load(v_ptrs, mask=col_ok[:, None], other=0.0)
        else:
            d_ok = offs_d < HEAD_DIM
            k = tl.load(k_ptrs, mask=col_ok[:, None] & d_ok[None, :], other=0.0)
            v = tl.load(v_ptrs, mask=col_ok[:, None] & d_ok[None, :], other=0.0)
    else:  # full blocks lie inside [0, kv_len) by the BlockList invariant
        if EVEN_D:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        else:
            d_ok = offs_d < HEAD_DIM
            k = tl.load(k_ptrs, mask=d_ok[None, :], other=0.0)
            v = tl.load(v_ptrs, mask=d_ok[None, :], other=0.0)
    if DOT_FP32:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    if IEEE:
        qk = tl.dot(q, tl.trans(k), input_precision="ieee")  # [BLOCK_M, BLOCK_N] fp32
    else:
        qk = tl.dot(q, tl.trans(k))
    qk = qk * qk_scale
    if MASKED:
        rows = row_in_tile + tl.arange(0, BLOCK_M)
        keep = tl.load(tile_base + rows[:, None] * stride_tm + offs_n[None, :] * stride_tn)
        keep = (keep != 0) & col_ok[None, :]
        qk = tl.where(keep, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing yet: avoid inf - inf
    else:
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_use = m_new
    acc, l_i = online_softmax_step(acc, l_i, m_i, m_use, qk, v, IEEE)
    return acc, l_i, m_new


@triton.jit
def online_softmax_step(acc, l_i, m_i, m_use, qk, v, IEEE: tl.constexpr):
    """Fold one tile of scores qk [BLOCK_M, BLOCK_N] (log2 units, masked = -inf) and its values
    v [BLOCK_N, D] into the running (acc, l_i); m_use: the new row max with -inf replaced by 0."""
    p = tl.math.exp2(qk - m_use[:, None])  # [BLOCK_M, BLOCK_N]
    alpha = tl.math.exp2(m_i - m_use)  # [BLOCK_M]
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    if IEEE:
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision="ieee")
    else:
        acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, l_i


@triton.jit
def _sparse_attention_fwd(
    Q, K, V, Out,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    FullNum, FullIdx, PartNum, PartIdx, PartTile, Tiles,
    s_fnum_b, s_fnum_h, s_fnum_m,
    s_fidx_b, s_fidx_h, s_fidx_m, s_fidx_j,
    s_pnum_b, s_pnum_h, s_pnum_m,
    s_pidx_b, s_pidx_h, s_pidx_m, s_pidx_j,
    s_ptile_b, s_ptile_h, s_ptile_m, s_ptile_j,
    s_tile_t, s_tile_m, s_tile_n,
    num_heads, q_len, kv_len, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    SPARSE_Q: tl.constexpr, SPARSE_KV: tl.constexpr, DOT_FP32: tl.constexpr, IEEE: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // num_heads).to(tl.int64)
    h = (pid_bh % num_heads).to(tl.int64)
    start_m = pid_m * BLOCK_M
    q_block = start_m // SPARSE_Q
    row_in_tile = start_m % SPARSE_Q
    EVEN_D: tl.constexpr = HEAD_DIM == BLOCK_D

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    q_ok = (offs_m < q_len)[:, None] & (offs_d < HEAD_DIM)[None, :]
    q = tl.load(q_ptrs, mask=q_ok, other=0.0)  # [BLOCK_M, BLOCK_D]
    if DOT_FP32:
        q = q.to(tl.float32)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    # full kv blocks: no mask
    n_full = tl.load(FullNum + b * s_fnum_b + h * s_fnum_h + q_block * s_fnum_m)
    full_row = FullIdx + b * s_fidx_b + h * s_fidx_h + q_block * s_fidx_m
    for j in range(0, n_full):
        kv_block = tl.load(full_row + j * s_fidx_j)
        for sub in tl.static_range(SPARSE_KV // BLOCK_N):
            start_n = kv_block * SPARSE_KV + sub * BLOCK_N
            acc, l_i, m_i = _attend_tile(
                acc, l_i, m_i, q, k_base, v_base, Tiles, start_n, row_in_tile, offs_n, offs_d, kv_len,
                stride_kn, stride_kd, stride_vn, stride_vd, s_tile_m, s_tile_n, qk_scale,
                False, EVEN_D, HEAD_DIM, BLOCK_M, DOT_FP32, IEEE)

    # partial kv blocks: scores masked by the block's tile
    n_part = tl.load(PartNum + b * s_pnum_b + h * s_pnum_h + q_block * s_pnum_m)
    part_row = PartIdx + b * s_pidx_b + h * s_pidx_h + q_block * s_pidx_m
    tile_row = PartTile + b * s_ptile_b + h * s_ptile_h + q_block * s_ptile_m
    for j in range(0, n_part):
        kv_block = tl.load(part_row + j * s_pidx_j)
        tile = tl.load(tile_row + j * s_ptile_j).to(tl.int64)
        for sub in tl.static_range(SPARSE_KV // BLOCK_N):
            start_n = kv_block * SPARSE_KV + sub * BLOCK_N
            tile_base = Tiles + tile * s_tile_t + sub * BLOCK_N * s_tile_n
            acc, l_i, m_i = _attend_tile(
                acc, l_i, m_i, q, k_base, v_base, tile_base, start_n, row_in_tile, offs_n, offs_d, kv_len,
                stride_kn, stride_kd, stride_vn, stride_vd, s_tile_m, s_tile_n, qk_scale,
                True, EVEN_D, HEAD_DIM, BLOCK_M, DOT_FP32, IEEE)

    l_safe = tl.where(l_i > 0.0, l_i, 1.0)
    out = acc / l_safe[:, None]
    o_ptrs = Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=q_ok)


def _launch_config(head_dim: int, block_q: int, block_kv: int, dtype: torch.dtype) -> dict:
    """Kernel tile sizes and launch options. Tiles divide the block list's blocks.

    On Hopper / Ada, 128 x 64 tiles with 8 warps (D=128) or 4 warps (D <= 64) and a 3-stage
    pipeline are the usual sweet spot for a FlashAttention-2 style forward; fp32 inputs need
    smaller tiles (twice the shared memory per element). Override with
    FRAMECAST_TRITON_TILE="BLOCK_M,BLOCK_N,num_warps,num_stages" (benchmarks).
    """
    if interpreting():
        return dict(BLOCK_M=min(block_q, 64), BLOCK_N=min(block_kv, 64), num_warps=4, num_stages=1)
    override = os.environ.get("FRAMECAST_TRITON_TILE")
    if override:
        bm, bn, warps, stages = (int(x) for x in override.split(","))
        return dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, num_stages=stages)
    small = dtype == torch.float32 or head_dim > 128
    bm = min(block_q, 64 if small else 128)
    bn = min(block_kv, 32 if small else 64)
    warps = 8 if head_dim >= 128 and not small else 4
    return dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, num_stages=2 if small else 3)


def sparse_attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_list: BlockList,
                             scale: float | None = None) -> torch.Tensor:
    """Block-sparse attention. q: [B, H, Lq, D]; k, v: [B, H, Lk, D] (any strides). Returns [B, H, Lq, D]
    in q's dtype."""
    batch, heads, q_len, head_dim = q.shape
    kv_len = k.shape[2]
    if k.shape != v.shape or k.shape[:2] != (batch, heads) or k.shape[3] != head_dim:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not match")
    if (block_list.q_len, block_list.kv_len) != (q_len, kv_len):
        raise ValueError(f"block list is for {block_list.q_len}x{block_list.kv_len}, attention is {q_len}x{kv_len}")
    if not (k.dtype == v.dtype == q.dtype):
        raise ValueError("q, k, v must share a dtype")
    bl = block_list
    for name, n in (("batch", batch), ("heads", heads)):
        dim = 0 if name == "batch" else 1
        if bl.kv_indices.shape[dim] not in (1, n):
            raise ValueError(f"block list {name} dim {bl.kv_indices.shape[dim]} is neither 1 nor {n}")
    cfg = _launch_config(head_dim, bl.block_q, bl.block_kv, q.dtype)
    if bl.block_q % cfg["BLOCK_M"] or bl.block_kv % cfg["BLOCK_N"]:
        raise ValueError(f"block list blocks {bl.block_q}x{bl.block_kv} must be multiples of the kernel "
                         f"tile {cfg['BLOCK_M']}x{cfg['BLOCK_N']}")
    out = torch.empty_like(q)
    scale = scale if scale is not None else 1.0 / math.sqrt(head_dim)

    def bh_strides(t: torch.Tensor) -> tuple[int, int]:  # broadcast (size-1) dims read with stride 0
        return (t.stride(0) if t.shape[0] > 1 else 0), (t.stride(1) if t.shape[1] > 1 else 0)

    def row_strides(t: torch.Tensor) -> tuple[int, ...]:
        return (*bh_strides(t), *t.stride()[2:])

    tiles = bl.tiles
    if tiles.shape[0] == 0:
        tiles = torch.zeros(1, bl.block_q, bl.block_kv, dtype=torch.bool, device=q.device)
    tiles = tiles.view(torch.uint8) if tiles.dtype == torch.bool else tiles
    grid = (triton.cdiv(q_len, cfg["BLOCK_M"]), batch * heads)
    _sparse_attention_fwd[grid](
        q, k, v, out,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        bl.full_kv_num_blocks, bl.full_kv_indices, bl.kv_num_blocks, bl.kv_indices, bl.kv_tile_ids, tiles,
        *row_strides(bl.full_kv_num_blocks), *row_strides(bl.full_kv_indices),
        *row_strides(bl.kv_num_blocks), *row_strides(bl.kv_indices), *row_strides(bl.kv_tile_ids),
        *tiles.stride(),
        heads, q_len, kv_len, scale * LOG2E,
        HEAD_DIM=head_dim, BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], SPARSE_Q=bl.block_q, SPARSE_KV=bl.block_kv,
        DOT_FP32=interpreting() and q.dtype == torch.bfloat16, IEEE=q.dtype == torch.float32,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out
