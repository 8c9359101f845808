"""The built-in attention backends, registered on import (see kernels/registry.py).

| name | what | calls |
|---|---|---|
| sdpa | torch scaled_dot_product_attention (any device, any pattern as a dense mask) | all |
| sdpa-flash, sdpa-cudnn, sdpa-efficient | SDPA pinned to one CUDA kernel (benchmarks; never picked by auto) | dense |
| flex | FlexAttention (compiled on CUDA, eager elsewhere) over the BlockList's BlockMask | all |
| triton | framecast's block-sparse Triton kernel (kernels/triton_attention.py) | all |
| flash | flash-attn's flash_attn_func | dense, fp16/bf16 CUDA |
| xformers | xformers memory_efficient_attention | dense, fp16/bf16 CUDA |
| fused | the streaming Triton kernel: ring-buffer K/V, RoPE on load (kernels/stream_kernel.py) | streaming |
"""

from __future__ import annotations

import functools
import importlib.util

import torch
import torch.nn.functional as F

from kernels.block_list import BlockList
from kernels.registry import AttentionBackend, register
from kernels.triton_env import interpret_without_gpu


def block_list_for(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None,
                   block_list: BlockList | None) -> BlockList:
    """The call's pattern as a BlockList (dense when there is no mask)."""
    if block_list is not None:
        return block_list
    if mask is None:
        return BlockList.dense(q.shape[2], k.shape[2], device=q.device)
    return BlockList.from_dense(mask, q.shape[2], k.shape[2])


# ---- probes -----------------------------------------------------------------------------------

def triton_usable() -> bool:
    """Triton on a GPU, or its CPU interpreter (which must be on before triton is imported)."""
    if importlib.util.find_spec("triton") is None:
        return False
    if torch.cuda.is_available():
        return True
    interpret_without_gpu()
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.zeros, InterpretedFunction)  # imported in interpreter mode


def _cuda_and(module: str):
    return lambda: torch.cuda.is_available() and importlib.util.find_spec(module) is not None


# ---- runners ----------------------------------------------------------------------------------

def _run_sdpa(q, k, v, mask, block_list):
    if block_list is not None:
        mask = block_list.dense_mask
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _sdpa_pinned(kind_name: str):
    def run(q, k, v, mask, block_list):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([getattr(SDPBackend, kind_name)]):
            return F.scaled_dot_product_attention(q, k, v)
    return run


def _run_triton(q, k, v, mask, block_list):
    from kernels.autograd import sparse_attention

    return sparse_attention(q, k, v, block_list_for(q, k, mask, block_list))


@functools.cache
def flex_function(compiled: bool):
    """flex_attention, compiled (CUDA) or eager."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention) if compiled else flex_attention


def _run_flex(q, k, v, mask, block_list):
    block_mask = block_list_for(q, k, mask, block_list).to_block_mask()
    return flex_function(q.is_cuda)(q, k, v, block_mask=block_mask)


def _run_flash(q, k, v, mask, block_list):
    from flash_attn import flash_attn_func

    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # [B, L, H, D]
    return out.transpose(1, 2)


def _run_xformers(q, k, v, mask, block_list):
    from xformers.ops import memory_efficient_attention

    out = memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # [B, L, H, D]
    return out.transpose(1, 2)


def _run_fused_stream(call):
    from kernels.autograd import fused_stream_attention

    return fused_stream_attention(call)


# ---- registrations ----------------------------------------------------------------------------

register(AttentionBackend("sdpa", "torch scaled_dot_product_attention", lambda: True, _run_sdpa))
for _label, _kind in (("flash", "FLASH_ATTENTION"), ("cudnn", "CUDNN_ATTENTION"), ("efficient", "EFFICIENT_ATTENTION")):
    register(AttentionBackend(f"sdpa-{_label}", f"SDPA pinned to its {_label} kernel", torch.cuda.is_available,
                              _sdpa_pinned(_kind), dense_only=True, auto=False))
register(AttentionBackend(
    "flex", "FlexAttention over the BlockList's BlockMask",
    lambda: importlib.util.find_spec("torch.nn.attention.flex_attention") is not None, _run_flex))
register(AttentionBackend("triton", "framecast's block-sparse Triton kernel", triton_usable, _run_triton))
register(AttentionBackend("flash", "flash-attn (dense)", _cuda_and("flash_attn"), _run_flash,
                          dense_only=True, half_cuda_only=True))
register(AttentionBackend("xformers", "xformers memory-efficient attention (dense)", _cuda_and("xformers"),
                          _run_xformers, dense_only=True, half_cuda_only=True))
register(AttentionBackend("fused", "streaming Triton kernel: ring-buffer K/V with RoPE on load", triton_usable,
                          run_stream=_run_fused_stream))
