"""`stream_attention(call, backend)`: one chunk of the streaming model against its ring-buffer cache.

The rolling cache holds **un-rotated** keys in ring order (kernels/ring_layout.py,
models/kv_cache.py); each pass rotates them to window-relative positions. A `StreamCall` carries
everything one layer's self-attention needs: the chunk's q/k/v, the layer's whole ring buffer and
which rows and slots to read, and the RoPE tables in factored form (kernels/rope.py).

Two ways to run it:
- **composed** (every ordinary backend): read the rows, rotate cache + chunk keys and the queries,
  concatenate, attend with a key-validity mask through `kernels.attention`. This is the path the
  model always had; it copies and rotates the whole cache per layer per pass.
- **fused** (`fused`, kernels/stream_kernel.py): one Triton kernel reads the ring rows in place,
  rotates keys as it loads them, skips invalid slots block by block. No copies.

Spatial locality (off unless `slot_local` is given): slots marked local are attended only by
queries within `local_radius` rows and columns of the key's place in its frame; the fused kernel
skips key tiles no query of its tile may see.

`auto` picks `fused` only on CUDA and only where a measured table (kernels/tuning.py, written by
`framecast bench attention --write-table`) says it beat the composed path at that shape; without
a table it keeps the composed path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels import registry
from kernels.dispatch import attention, backend_available, log_fallback, requested_backend
from kernels.rope import rotate_pairs, token_tables


@dataclass(frozen=True)
class StreamRope:
    """RoPE tables of one streaming pass, factored (kernels/rope.py)."""

    frame_cos: torch.Tensor  # [B, S + c, Pt] fp32: temporal pairs of the S cache slots, then the c chunk frames
    frame_sin: torch.Tensor  # [B, S + c, Pt] fp32
    grid_cos: torch.Tensor  # [T, Ps] fp32: spatial pairs of each in-frame token
    grid_sin: torch.Tensor  # [T, Ps] fp32


@dataclass(frozen=True)
class StreamCall:
    """One layer's self-attention of a chunk against the rolling cache."""

    q: torch.Tensor  # [B, Lq, H, D] chunk queries (normed, not rotated); Lq = c * T
    k: torch.Tensor  # [B, Lq, H, D] chunk keys (normed, not rotated)
    v: torch.Tensor  # [B, Lq, H, D] chunk values
    cache_k: torch.Tensor  # [Bmax, S*T, H, D] the layer's ring buffer of un-rotated keys
    cache_v: torch.Tensor  # [Bmax, S*T, H, D]
    rows: torch.Tensor  # [B] long: cache row of each batch entry
    slot_valid: torch.Tensor  # [B, S] bool: slot holds a frame the chunk attends to
    rope: StreamRope
    contiguous: slice | None = None  # `rows` as a slice when consecutive (a view, no gather)
    slot_local: torch.Tensor | None = None  # [B, S] bool: slot seen only near each query (spatial locality)
    local_radius: int = 0  # |row| and |column| distance, in tokens, kept in local slots
    frame_width: int = 1  # tokens per frame row (in-frame token i sits at row i // W, column i % W)

    @property
    def tokens_per_frame(self) -> int:
        return self.rope.grid_cos.shape[0]

    @property
    def slots(self) -> int:
        return self.slot_valid.shape[1]

    def cache_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """K, V of the call's rows [B, S*T, H, D] (a view when the rows are consecutive)."""
        if self.contiguous is not None:
            return self.cache_k[self.contiguous], self.cache_v[self.contiguous]
        return self.cache_k[self.rows], self.cache_v[self.rows]

    def key_valid(self) -> torch.Tensor:
        """[B, (S + c) * T] bool: every key token of the composed layout (cache, then chunk)."""
        c = self.rope.frame_cos.shape[1] - self.slots
        chunk = torch.ones(self.q.shape[0], c, dtype=torch.bool, device=self.slot_valid.device)
        return torch.cat([self.slot_valid, chunk], 1).repeat_interleave(self.tokens_per_frame, 1)

    def key_mask(self) -> torch.Tensor:
        """Which keys each query attends: [B, 1, 1, Lk] (no locality) or [B, 1, Lq, Lk] bool."""
        valid = self.key_valid()[:, None, None, :]
        if self.slot_local is None:
            return valid
        c = self.rope.frame_cos.shape[1] - self.slots
        t, w, r = self.tokens_per_frame, self.frame_width, self.local_radius
        local = torch.cat([self.slot_local, torch.zeros_like(self.slot_local[:, :c])], 1).repeat_interleave(t, 1)
        tau_q = torch.arange(self.q.shape[1], device=valid.device) % t
        tau_k = torch.arange(local.shape[1], device=valid.device) % t
        near = ((tau_q[:, None] // w - tau_k[None, :] // w).abs() <= r) & ((tau_q[:, None] % w - tau_k[None, :] % w).abs() <= r)
        return valid & (~local[:, None, None, :] | near[None, None])  # [B, 1, Lq, Lk]

    def flops(self) -> float:
        """Dense-equivalent FLOPs of the call over every slot (4 * B * H * Lq * Lk * D)."""
        b, lq, h, d = self.q.shape
        return 4.0 * b * h * lq * (self.cache_k.shape[1] + lq) * d


def compose(call: StreamCall, dtype: torch.dtype | None = None):
    """The composed layout: rotated q [B, Lq, H, D], rotated cache+chunk keys and values
    [B, (S+c)*T, H, D] and the key mask [B, 1, 1 or Lq, (S+c)*T] (`StreamCall.key_mask`).

    dtype None reproduces the model's original arithmetic exactly (keys rotated in the cache's
    dtype, then cast to q's); a dtype (the reference passes fp32) casts everything first.
    """
    r = call.rope
    slots = call.slots
    k_cache, v_cache = call.cache_rows()
    q, k, v = call.q, call.k, call.v
    if dtype is not None:
        q, k, v, k_cache, v_cache = (t.to(dtype) for t in (q, k, v, k_cache, v_cache))
    cos_q, sin_q = token_tables(r.frame_cos[:, slots:], r.frame_sin[:, slots:], r.grid_cos, r.grid_sin)
    cos_k, sin_k = token_tables(r.frame_cos, r.frame_sin, r.grid_cos, r.grid_sin)
    k_all = rotate_pairs(torch.cat([k_cache, k.to(k_cache.dtype)], 1), cos_k, sin_k)
    v_all = torch.cat([v_cache, v.to(v_cache.dtype)], 1)
    mask = call.key_mask()
    return rotate_pairs(q, cos_q, sin_q), k_all.to(q.dtype), v_all.to(q.dtype), mask


def run_composed(call: StreamCall, backend: str) -> torch.Tensor:
    """Rotate + concatenate + `kernels.attention(backend)`. Returns [B, Lq, H, D]."""
    q, k, v, mask = compose(call)
    out = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask, backend=backend)
    return out.transpose(1, 2)


def why_not_stream(name: str, call: StreamCall) -> str | None:
    """Why a fused streaming backend cannot run this call (None = it can)."""
    if not backend_available(name):
        return "is not available"
    d = call.q.shape[-1]
    if d < 32 or d & (d - 1):
        return f"needs a power-of-two head dim >= 32 (got {d})"
    if not call.q.is_cuda:
        from kernels.triton_attention import interpreting  # triton is importable: the probe passed

        if not interpreting():
            return "needs CUDA tensors (or TRITON_INTERPRET=1)"
    return None


def select_stream_backend(call: StreamCall, backend: str | None = None) -> str:
    """The backend that will run a streaming call: a fused one, or an ordinary one (composed)."""
    name = requested_backend(backend)
    if name == "auto":
        return "fused" if _auto_prefers_fused(call) else "auto"
    if registry.get(name).run_stream is None:
        return name
    reason = why_not_stream(name, call)
    if reason is None:
        return name
    log_fallback(name, reason, "auto")
    return "auto"


def stream_attention(call: StreamCall, backend: str | None = None) -> torch.Tensor:
    """Softmax attention (scale 1/sqrt(D)) of the chunk over the valid cache slots and itself,
    RoPE applied at window-relative positions. Returns [B, Lq, H, D] in q's dtype."""
    name = select_stream_backend(call, backend)
    spec = registry.get(name) if name != "auto" else None
    if spec is not None and spec.run_stream is not None:
        return spec.run_stream(call)
    return run_composed(call, name)


def _auto_prefers_fused(call: StreamCall) -> bool:
    if not call.q.is_cuda or why_not_stream("fused", call) is not None:
        return False
    from kernels.tuning import prefers_fused

    return prefers_fused(call)
