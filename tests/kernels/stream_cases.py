"""Random `StreamCall`s laid out like the model's rolling cache (shared by the streaming tests)."""

from kernels.bench_fused import ring_call  # noqa: F401
