"""`attention(q, k, v, mask, block_list, backend)`: one call, the fastest backend that fits.

Backends live in the registry (kernels/registry.py; the built-ins in kernels/backends.py).
`auto` picks: on CUDA, flash-attn for a dense pattern in fp16/bf16 (else SDPA); for a sparse
pattern FlexAttention when gradients are needed (its backward is fused and sparse), else the
Triton kernel (else FlexAttention, else SDPA). Off CUDA: SDPA, with the pattern
expanded to a dense mask. The backend comes from the `backend` argument; when that is None,
`FRAMECAST_ATTN` is the default (so the variable forces a backend everywhere nobody passed one).
A forced backend that is missing or cannot run the call falls back to `auto` with one log line
per (backend, reason); a streaming-only backend (`fused`) forced everywhere applies to the
streaming call and leaves every other call to `auto` silently. Probes run once (`backend_available`, monkeypatchable in tests).

The streaming model's ring-cache call has its own entry point, `kernels.stream_attention`
(kernels/streaming.py), which shares this validation, fallback and logging.
"""

from __future__ import annotations

import functools
import logging
import os

import torch

from kernels import registry
from kernels.block_list import BlockList

logger = logging.getLogger(__name__)

ENV_VAR = "FRAMECAST_ATTN"
BACKENDS = ("auto", *registry.names())
backend_available = registry.available


@functools.cache
def log_fallback(requested: str, reason: str, used: str) -> None:
    """One log line per distinct fallback."""
    logger.warning("attention backend %r %s; using %r", requested, reason, used)


def requested_backend(backend: str | None = None) -> str:
    """The backend asked for: the argument, else $FRAMECAST_ATTN, else auto (validated)."""
    name = (backend or os.environ.get(ENV_VAR) or "auto").strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r} (from {'argument' if backend else ENV_VAR}); "
                         f"choose one of {', '.join(BACKENDS)}")
    return name


def _auto(q: torch.Tensor, dense: bool) -> str:
    if q.is_cuda:
        if dense:
            if backend_available("flash") and q.dtype in (torch.float16, torch.bfloat16):
                return "flash"
            return "sdpa"
        if torch.is_grad_enabled() and q.requires_grad and backend_available("flex"):
            return "flex"  # a fused sparse backward (the Triton kernel's backward recomputes densely)
        if backend_available("triton"):
            return "triton"
        return "flex" if backend_available("flex") else "sdpa"
    return "sdpa"


def _why_not(name: str, q: torch.Tensor, dense: bool) -> str | None:
    """Why a forced backend cannot run this call (None = it can)."""
    if not backend_available(name):
        return "is not available"
    spec = registry.get(name)
    if spec.dense_only and not dense:
        return "supports only dense patterns"
    if spec.half_cuda_only and (not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16)):
        return "needs fp16/bf16 CUDA tensors"
    return None


def select_backend(q: torch.Tensor, dense: bool, backend: str | None = None) -> str:
    """The backend that will run a call on `q` (dense = no mask and no block list)."""
    name = requested_backend(backend)
    if name == "auto" or registry.get(name).run is None:  # a streaming-only backend leaves other calls to auto
        return _auto(q, dense)
    reason = _why_not(name, q, dense)
    if reason is None:
        return name
    used = _auto(q, dense)
    log_fallback(name, reason, used)
    return used


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              block_list: BlockList | None = None, backend: str | None = None) -> torch.Tensor:
    """Softmax attention with scale 1/sqrt(D).

    q: [B, H, Lq, D]; k, v: [B, H, Lk, D]; mask: None or bool broadcastable to [B, H, Lq, Lk]
    (True = attend), e.g. key validity [B, 1, 1, Lk]; block_list: a `BlockList` (kv indices in
    the physical K/V layout). Returns [B, H, Lq, D] in q's dtype.
    """
    if mask is not None and block_list is not None:
        raise ValueError("pass mask or block_list, not both")
    if mask is not None and mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool (True = attend), got {mask.dtype}")
    name = select_backend(q, dense=mask is None and block_list is None, backend=backend)
    return registry.get(name).run(q, k, v, mask, block_list)
