"""The attention-backend registry: name -> availability probe + runner.

Every backend framecast can run is one `AttentionBackend` registered here (kernels/backends.py
registers the built-in ones). Dispatch (`kernels.attention`, `kernels.stream_attention`) and
`framecast bench attention` look backends up by name; nobody imports another module's runner.

Adding a backend = one `register(AttentionBackend(...))` call: a probe (can this process run it?),
and a `run` for ordinary calls and/or a `run_stream` for the ring-cache call of the streaming model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

from kernels.block_list import BlockList

# (q, k, v, mask, block_list) -> out; q [B, H, Lq, D], k/v [B, H, Lk, D], out [B, H, Lq, D]
Runner = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None", "BlockList | None"], torch.Tensor]
# (call: kernels.streaming.StreamCall) -> out [B, Lq, H, D]
StreamRunner = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class AttentionBackend:
    """One way to compute attention."""

    name: str  # what FRAMECAST_ATTN / backend= / --backends take
    summary: str  # one line for --help and docs
    probe: Callable[[], bool]  # whether this process can run it (called once, cached)
    run: Runner | None = None  # ordinary calls (None: streaming calls only)
    run_stream: StreamRunner | None = None  # the streaming ring-cache call, fused (None: composed from `run`)
    dense_only: bool = False  # runs only calls with no mask and no block list
    half_cuda_only: bool = False  # needs fp16/bf16 CUDA tensors
    auto: bool = True  # `auto` may pick it (False: only when forced, e.g. SDPA sub-kernels for benchmarks)


_REGISTRY: dict[str, AttentionBackend] = {}


def register(backend: AttentionBackend) -> AttentionBackend:
    """Add (or replace) a backend; returns it."""
    if backend.run is None and backend.run_stream is None:
        raise ValueError(f"backend {backend.name!r} has neither run nor run_stream")
    _REGISTRY[backend.name] = backend
    available.cache_clear()
    return backend


def names() -> tuple[str, ...]:
    """Registered backend names, in registration order."""
    _ensure_builtins()
    return tuple(_REGISTRY)


def get(name: str) -> AttentionBackend:
    _ensure_builtins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown attention backend {name!r}; choose one of auto, {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


@functools.cache
def available(name: str) -> bool:
    """Whether backend `name` can run in this process (probed once per name)."""
    return bool(get(name).probe())


def _ensure_builtins() -> None:
    import kernels.backends  # noqa: F401  (registers the built-in backends on import)
