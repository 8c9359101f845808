"""Attention kernels: backend dispatch, block-sparse Triton kernel, mask builders, torch reference.

`attention(q, k, v, mask=None, block_list=None, backend=None)` is what the model calls, and
`stream_attention(StreamCall, backend=None)` its streaming self-attention over the ring cache. Importing
this package does not import triton (the kernel module is loaded on first use).
"""

from kernels.block_list import BlockList
from kernels.dispatch import BACKENDS, attention, backend_available, select_backend
from kernels.reference import reference_attention
from kernels.ring_layout import RingLayout
from kernels.streaming import StreamCall, StreamRope, stream_attention

__all__ = ["BACKENDS", "BlockList", "RingLayout", "attention", "backend_available", "reference_attention",
           "select_backend", "StreamCall", "StreamRope", "stream_attention"]
