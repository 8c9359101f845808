"""The one place framecast sets `TRITON_INTERPRET` (Triton's own switch to its CPU interpreter).

Triton reads the variable when it is imported, so it must be set before anything imports triton;
afterwards setting it changes nothing. Called by the backend probe (kernels/dispatch.py), the
attention benchmark and the test suite's conftest.
"""

from __future__ import annotations

import os
import sys

import torch

ENV_VAR = "TRITON_INTERPRET"


def interpret_without_gpu(force: bool = False) -> None:
    """Run Triton kernels in the interpreter when there is no CUDA device (or when `force`d)."""
    if "triton" in sys.modules:  # too late: triton already chose
        return
    if force or not torch.cuda.is_available():
        os.environ.setdefault(ENV_VAR, "1")
