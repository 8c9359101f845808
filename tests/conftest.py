"""Shared pytest setup. Runs before any test module imports triton or the kernels."""

import os

import torch

if not torch.cuda.is_available():
    # Triton kernels run in its CPU interpreter; must be set before triton compiles anything
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Skip `@pytest.mark.gpu` tests when there is no CUDA device."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
