"""The fused streaming attention forward in Triton: ring-buffer K/V read in place, RoPE on load.

One program per (query tile of BLOCK_M rows, batch x head). It rotates its queries once, then
walks two key ranges with one online softmax (fp32, exp2 with log2(e) folded into the scale):

1. the layer's ring buffer row `rows[b]` (sink + window slots in ring order, keys un-rotated):
   a tile whose slots are all invalid (`slot_valid`) is skipped without loading K or V; a
   partly valid tile masks its invalid columns;
2. the chunk's own keys (always valid; only a ragged tail is masked).

With spatial locality (`StreamCall.slot_local`), keys of local slots count only for queries
within `local_radius` rows and columns of them in the frame, and a tile no query may see is
skipped like an empty one.

Keys are rotated as they are loaded: each tile is split into its even and odd channels
(`tl.reshape` + `tl.split`), turned by the factored RoPE tables (per-frame temporal pairs, per
in-frame-token spatial pairs: kernels/rope.py), and q·k is the sum of the even and odd halves'
dots. Nothing is concatenated and no rotated copy of the cache is written.

fp16 / bf16 dots run on the tensor cores with fp32 accumulation; fp32 inputs use IEEE fp32 dots;
under `TRITON_INTERPRET=1` bf16 is upcast to fp32 first (the interpreter's bf16 dot is wrong).
Plain pointer arithmetic and standard `tl.dot` only: no Hopper-only instructions, so the same
kernel runs on Ada (RTX 4090) and Ampere. Importing this module imports triton.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from kernels.streaming import StreamCall
from kernels.triton_attention import LOG2E, interpreting, online_softmax_step


@triton.jit
def _rope_tables(FCOS, FSIN, GCOS, GSIN, frame_off, tau, ok, offs_p, s_fp, s_gt, s_gp, PT: tl.constexpr):
    """cos, sin [BLOCK, HALF] fp32 for tokens whose frame-table row starts at `frame_off` and whose
    in-frame index is `tau` (both [BLOCK]); pairs < PT are temporal, the rest spatial."""
    is_t = offs_p < PT
    f_ptr = frame_off[:, None] + offs_p[None, :] * s_fp
    g_ptr = tau[:, None] * s_gt + (offs_p - PT)[None, :] * s_gp
    f_mask = ok[:, None] & is_t[None, :]
    g_mask = ok[:, None] & (offs_p >= PT)[None, :]
    cos = tl.where(is_t[None, :], tl.load(FCOS + f_ptr, mask=f_mask, other=0.0),
                   tl.load(GCOS + g_ptr, mask=g_mask, other=0.0))
    sin = tl.where(is_t[None, :], tl.load(FSIN + f_ptr, mask=f_mask, other=0.0),
                   tl.load(GSIN + g_ptr, mask=g_mask, other=0.0))
    return cos, sin


@triton.jit
def _rotate(x, cos, sin, BLOCK: tl.constexpr, HALF: tl.constexpr):
    """x [BLOCK, 2*HALF] fp32 -> its rotated even and odd channels [BLOCK, HALF] each."""
    even, odd = tl.split(tl.reshape(x, [BLOCK, HALF, 2]))
    return even * cos - odd * sin, even * sin + odd * cos


@triton.jit
def _attend_keys(acc, l_i, m_i, qe, qo, k_base, v_base, cols, ok, keep, frame_off, tau,
                 s_kn, s_kd, s_vn, s_vd, FCOS, FSIN, GCOS, GSIN, s_fp, s_gt, s_gp,
                 offs_d, offs_p, PT: tl.constexpr, BLOCK_N: tl.constexpr, HALF: tl.constexpr,
                 IEEE: tl.constexpr):
    """One [BLOCK_M, BLOCK_N] step of the online softmax over keys `cols` (loaded where `ok` [BLOCK_N],
    scored where `keep` [1 or BLOCK_M, BLOCK_N])."""
    k = tl.load(k_base + cols[:, None] * s_kn + offs_d[None, :] * s_kd, mask=ok[:, None], other=0.0)
    v = tl.load(v_base + cols[:, None] * s_vn + offs_d[None, :] * s_vd, mask=ok[:, None], other=0.0)
    cos, sin = _rope_tables(FCOS, FSIN, GCOS, GSIN, frame_off, tau, ok, offs_p, s_fp, s_gt, s_gp, PT)
    ke, ko = _rotate(k.to(tl.float32), cos, sin, BLOCK_N, HALF)
    ke = ke.to(qe.dtype)
    ko = ko.to(qe.dtype)
    v = v.to(qe.dtype)
    if IEEE:
        qk = tl.dot(qe, tl.trans(ke), input_precision="ieee")
        qk = tl.dot(qo, tl.trans(ko), qk, input_precision="ieee")  # [BLOCK_M, BLOCK_N] fp32
    else:
        qk = tl.dot(qe, tl.trans(ke))
        qk = tl.dot(qo, tl.trans(ko), qk)
    qk = tl.where(keep, qk, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing yet: avoid inf - inf
    acc, l_i = online_softmax_step(acc, l_i, m_i, m_use, qk, v, IEEE)
    return acc, l_i, m_new


@triton.jit
def _stream_attention_fwd(
    Q, KN, VN, KC, VC, Out, Rows, Valid, FCOS, FSIN, GCOS, GSIN,
    s_qb, s_qm, s_qh, s_qd,
    s_knb, s_knn, s_knh, s_knd,
    s_vnb, s_vnn, s_vnh, s_vnd,
    s_kcb, s_kcn, s_kch, s_kcd,
    s_vcb, s_vcn, s_vch, s_vcd,
    s_ob, s_om, s_oh, s_od,
    s_valb, s_vals, Local, s_locb, s_locs, radius, width,
    s_fb, s_ff, s_fp, s_gt, s_gp,
    num_heads, q_len, cache_len, tokens_per_frame, slots, qk_scale,
    PT: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT_FP32: tl.constexpr, IEEE: tl.constexpr, LOCAL: tl.constexpr,
):
    HALF: tl.constexpr = HEAD_DIM // 2
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // num_heads).to(tl.int64)
    h = (pid_bh % num_heads).to(tl.int64)
    row = tl.load(Rows + b).to(tl.int64)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_p = tl.arange(0, HALF)
    m_ok = offs_m < q_len

    # queries: load, rotate at their chunk frames, fold in the softmax scale
    q = tl.load(Q + b * s_qb + h * s_qh + offs_m[:, None] * s_qm + offs_d[None, :] * s_qd,
                mask=m_ok[:, None], other=0.0)
    q_frame_off = b * s_fb + (slots + offs_m // tokens_per_frame) * s_ff
    cos, sin = _rope_tables(FCOS, FSIN, GCOS, GSIN, q_frame_off, offs_m % tokens_per_frame, m_ok, offs_p,
                            s_fp, s_gt, s_gp, PT)
    qe, qo = _rotate(q.to(tl.float32), cos, sin, BLOCK_M, HALF)
    if DOT_FP32:
        qe = qe * qk_scale
        qo = qo * qk_scale
    else:
        qe = (qe * qk_scale).to(Q.dtype.element_ty)
        qo = (qo * qk_scale).to(Q.dtype.element_ty)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    # 1. the ring buffer row, in place; tiles with no valid slot (or, with locality, no key near
    #    any query of the tile) are skipped
    kc_base = KC + row * s_kcb + h * s_kch
    vc_base = VC + row * s_vcb + h * s_vch
    q_tau = offs_m % tokens_per_frame
    for start_n in range(0, cache_len, BLOCK_N):
        cols = start_n + offs_n
        slot = cols // tokens_per_frame
        k_tau = cols % tokens_per_frame
        ok = tl.load(Valid + b * s_valb + slot * s_vals, mask=cols < cache_len, other=0) != 0
        if LOCAL:
            far = tl.load(Local + b * s_locb + slot * s_locs, mask=cols < cache_len, other=0) != 0
            dy = tl.abs(q_tau[:, None] // width - k_tau[None, :] // width)
            dx = tl.abs(q_tau[:, None] % width - k_tau[None, :] % width)
            keep = ok[None, :] & ((dy <= radius) & (dx <= radius) | (far == 0)[None, :])  # [BLOCK_M, BLOCK_N]
            ok = ok & (tl.max(keep.to(tl.int32), 0) > 0)
        else:
            keep = ok[None, :]
        if tl.max(ok.to(tl.int32), 0) > 0:
            acc, l_i, m_i = _attend_keys(
                acc, l_i, m_i, qe, qo, kc_base, vc_base, cols, ok, keep, b * s_fb + slot * s_ff, k_tau,
                s_kcn, s_kcd, s_vcn, s_vcd, FCOS, FSIN, GCOS, GSIN, s_fp, s_gt, s_gp,
                offs_d, offs_p, PT, BLOCK_N, HALF, IEEE)

    # 2. the chunk's own keys
    kn_base = KN + b * s_knb + h * s_knh
    vn_base = VN + b * s_vnb + h * s_vnh
    for start_n in range(0, q_len, BLOCK_N):
        cols = start_n + offs_n
        acc, l_i, m_i = _attend_keys(
            acc, l_i, m_i, qe, qo, kn_base, vn_base, cols, cols < q_len, (cols < q_len)[None, :],
            b * s_fb + (slots + cols // tokens_per_frame) * s_ff, cols % tokens_per_frame,
            s_knn, s_knd, s_vnn, s_vnd, FCOS, FSIN, GCOS, GSIN, s_fp, s_gt, s_gp,
            offs_d, offs_p, PT, BLOCK_N, HALF, IEEE)

    out = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
    o_ptrs = Out + b * s_ob + h * s_oh + offs_m[:, None] * s_om + offs_d[None, :] * s_od
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=m_ok[:, None])


def launch_config(head_dim: int, dtype: torch.dtype) -> dict:
    """Tile sizes and launch options (FRAMECAST_STREAM_TILE="BLOCK_M,BLOCK_N,num_warps,num_stages"
    overrides, for benchmarks)."""
    if interpreting():
        return dict(BLOCK_M=32, BLOCK_N=32, num_warps=4, num_stages=1)
    override = os.environ.get("FRAMECAST_STREAM_TILE")
    if override:
        bm, bn, warps, stages = (int(x) for x in override.split(","))
        return dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, num_stages=stages)
    if dtype == torch.float32:
        return dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2)
    return dict(BLOCK_M=128, BLOCK_N=64, num_warps=8 if head_dim >= 128 else 4, num_stages=3)


def stream_attention_forward(call: StreamCall, scale: float | None = None) -> torch.Tensor:
    """The fused kernel on one `StreamCall`. Returns [B, Lq, H, D] in q's dtype."""
    q, k, v = call.q, call.k, call.v
    batch, q_len, heads, head_dim = q.shape
    r = call.rope
    pt = r.frame_cos.shape[-1]
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not match")
    if call.cache_k.shape[2:] != (heads, head_dim) or call.cache_v.shape != call.cache_k.shape:
        raise ValueError(f"cache {tuple(call.cache_k.shape)} does not match q {tuple(q.shape)}")
    if pt + r.grid_cos.shape[-1] != head_dim // 2:
        raise ValueError(f"RoPE tables cover {pt}+{r.grid_cos.shape[-1]} pairs, head dim is {head_dim}")
    slots, t = call.slots, call.tokens_per_frame
    if call.cache_k.shape[1] != slots * t or q_len % t or r.frame_cos.shape[1] != slots + q_len // t:
        raise ValueError("cache, chunk and RoPE tables disagree on slots / tokens per frame")
    cfg = launch_config(head_dim, q.dtype)
    out = torch.empty_like(q)
    scale = scale if scale is not None else 1.0 / math.sqrt(head_dim)
    fcos, fsin = r.frame_cos.contiguous(), r.frame_sin.contiguous()
    gcos, gsin = r.grid_cos.contiguous(), r.grid_sin.contiguous()
    valid = call.slot_valid.to(torch.uint8)
    local = call.slot_local.to(torch.uint8) if call.slot_local is not None else valid  # (unread without locality)
    rows = call.rows.to(device=q.device, dtype=torch.int64)
    grid = (triton.cdiv(q_len, cfg["BLOCK_M"]), batch * heads)
    _stream_attention_fwd[grid](
        q, k, v, call.cache_k, call.cache_v, out, rows, valid, fcos, fsin, gcos, gsin,
        *q.stride(), *k.stride(), *v.stride(), *call.cache_k.stride(), *call.cache_v.stride(), *out.stride(),
        *valid.stride(), local, *local.stride(), call.local_radius, call.frame_width,
        *fcos.stride(), *gcos.stride(),
        heads, q_len, slots * t, t, slots, scale * LOG2E,
        PT=pt, HEAD_DIM=head_dim, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
        DOT_FP32=q.dtype == torch.float32 or (interpreting() and q.dtype == torch.bfloat16), IEEE=q.dtype == torch.float32,
        LOCAL=call.slot_local is not None,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out
