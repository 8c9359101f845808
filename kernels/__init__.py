"""Attention kernels: backend dispatch, block-sparse Triton kernel, mask builders, torch reference.

`attention(q, k, v, mask=None, block_list=None, backend=None)` is what the model calls. Importing
this package does not import triton (the kernel module is loaded on first use).
"""

from kernels.block_list import BlockList
from kernels.dispatch import BACKENDS, attention, backend_available, select_backend
from kernels.reference import reference_attention
from kernels.ring_layout import RingLayout

__all__ = ["BACKENDS", "BlockList", "RingLayout", "attention", "backend_available", "reference_attention",
           "select_backend"]
