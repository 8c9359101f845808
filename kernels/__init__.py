"""Attention kernels: backend dispatch, block-sparse Triton kernel, mask builders, torch reference."""

from kernels.dispatch import attention

__all__ = ["attention"]
