"""Shared pytest setup. Runs before any test module imports triton or the kernels."""

import pytest
import torch

from kernels.triton_env import interpret_without_gpu

interpret_without_gpu()  # Triton kernels run in its CPU interpreter; must be on before triton is imported


def pytest_collection_modifyitems(config, items):
    """Skip `@pytest.mark.gpu` tests when there is no CUDA device."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A test that loads a server's model sets the process's torch threads (server.app.set_cpu_threads):
    put them back, so later tests run as fast as before."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
