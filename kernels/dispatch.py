"""`attention(q, k, v, mask, block_list, backend)`: one call, the fastest backend that fits.

Backends: `sdpa` (PyTorch scaled_dot_product_attention), `flex` (FlexAttention; compiled on
CUDA, eager elsewhere), `triton` (framecast's block-sparse kernel, kernels/triton_attention.py),
`flash` (flash-attn, dense only), `xformers` (memory-efficient attention, dense only).

`auto` picks: on CUDA, flash-attn for a dense pattern in fp16/bf16 (else SDPA); the Triton
kernel for a sparse pattern (else FlexAttention, else SDPA). Off CUDA: SDPA, with the pattern
expanded to a dense mask. `FRAMECAST_ATTN` overrides `auto` everywhere. A forced backend that is
missing or cannot run the call falls back to `auto` with one log line per (backend, reason).
Optional libraries are probed once (`backend_available`, monkeypatchable in tests).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os

import torch
import torch.nn.functional as F

from kernels.block_list import BlockList
from kernels.triton_env import interpret_without_gpu

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "sdpa", "flex", "triton", "flash", "xformers")
ENV_VAR = "FRAMECAST_ATTN"


@functools.cache
def backend_available(name: str) -> bool:
    """Whether a backend can run in this process (probed once per name)."""
    if name == "sdpa":
        return True
    if name == "flex":
        return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None
    if name == "triton":
        if importlib.util.find_spec("triton") is None:
            return False
        if torch.cuda.is_available():
            return True
        interpret_without_gpu()  # no GPU: Triton's CPU interpreter, on before triton itself is imported
        return _triton_interpreter_active()
    if name == "flash":
        return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None
    if name == "xformers":
        return torch.cuda.is_available() and importlib.util.find_spec("xformers") is not None
    raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKENDS)}")


def _triton_interpreter_active() -> bool:
    """Whether triton was imported in interpreter mode (its own jit library functions are then
    interpreted; setting TRITON_INTERPRET after `import triton` is too late)."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.zeros, InterpretedFunction)


@functools.cache
def _log_fallback(requested: str, reason: str, used: str) -> None:
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
        if backend_available("triton"):
            return "triton"
        return "flex" if backend_available("flex") else "sdpa"
    return "sdpa"


def _why_not(name: str, q: torch.Tensor, dense: bool) -> str | None:
    """Why a forced backend cannot run this call (None = it can)."""
    if not backend_available(name):
        return "is not available"
    if name in ("flash", "xformers"):
        if not dense:
            return "supports only dense patterns"
        if not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16):
            return "needs fp16/bf16 CUDA tensors"
    return None


def select_backend(q: torch.Tensor, dense: bool, backend: str | None = None) -> str:
    """The backend that will run a call on `q` (dense = no mask and no block list)."""
    name = requested_backend(backend)
    if name == "auto":
        return _auto(q, dense)
    reason = _why_not(name, q, dense)
    if reason is None:
        return name
    used = _auto(q, dense)
    _log_fallback(name, reason, used)
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
    return _RUNNERS[name](q, k, v, mask, block_list)


# ---- runners: (q, k, v, mask, block_list) -> out ----------------------------------------------

def _block_list_for(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None,
                    block_list: BlockList | None) -> BlockList:
    if block_list is not None:
        return block_list
    if mask is None:
        return BlockList.dense(q.shape[2], k.shape[2], device=q.device)
    return BlockList.from_dense(mask, q.shape[2], k.shape[2])


def _run_sdpa(q, k, v, mask, block_list):
    if block_list is not None:
        mask = block_list.to_dense()
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _run_triton(q, k, v, mask, block_list):
    from kernels.autograd import sparse_attention

    return sparse_attention(q, k, v, _block_list_for(q, k, mask, block_list))


@functools.cache
def _flex_fn(compiled: bool):
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention) if compiled else flex_attention


def _run_flex(q, k, v, mask, block_list):
    block_mask = _block_list_for(q, k, mask, block_list).to_block_mask()
    return _flex_fn(q.is_cuda)(q, k, v, block_mask=block_mask)


def _run_flash(q, k, v, mask, block_list):
    from flash_attn import flash_attn_func

    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # [B, L, H, D]
    return out.transpose(1, 2)


def _run_xformers(q, k, v, mask, block_list):
    from xformers.ops import memory_efficient_attention

    out = memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # [B, L, H, D]
    return out.transpose(1, 2)


_RUNNERS = {"sdpa": _run_sdpa, "flex": _run_flex, "triton": _run_triton,
            "flash": _run_flash, "xformers": _run_xformers}
