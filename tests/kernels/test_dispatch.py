"""Backend dispatch: auto choice, forced backends, env override, fallback with one log line."""

import dataclasses
import logging

import pytest
import torch

import kernels
from kernels import BlockList, reference_attention
from kernels import dispatch, registry


@pytest.fixture(autouse=True)
def _fresh_logs(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    dispatch.log_fallback.cache_clear()
    yield
    dispatch.log_fallback.cache_clear()


def _qkv(lq=24, lk=40, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 2, n, d, generator=g) for n in (lq, lk, lk)]


def _key_valid(lk=40):
    valid = torch.ones(2, 1, 1, lk, dtype=torch.bool)
    valid[1, ..., 10:30] = False
    return valid


@pytest.mark.parametrize("backend", ["sdpa", "flex", "triton"])
@pytest.mark.parametrize("pattern", ["dense", "key_valid", "block_list"])
def test_forced_backends_match_the_reference(backend, pattern):
    q, k, v = _qkv()
    mask = block_list = None
    if pattern == "key_valid":
        mask = _key_valid()
    elif pattern == "block_list":
        block_list = BlockList.from_dense(torch.rand(1, 1, 24, 40, generator=torch.Generator().manual_seed(1)) > 0.4,
                                          block_q=16, block_kv=16)
    out = kernels.attention(q, k, v, mask=mask, block_list=block_list, backend=backend)
    ref = reference_attention(q, k, v, mask=mask, block_list=block_list)
    assert out.shape == q.shape and out.dtype == q.dtype
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)


def test_auto_on_cpu_is_sdpa():
    q, *_ = _qkv()
    assert dispatch.select_backend(q, dense=True) == "sdpa"
    assert dispatch.select_backend(q, dense=False) == "sdpa"


def test_env_var_overrides_auto(monkeypatch):
    q, *_ = _qkv()
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    assert dispatch.select_backend(q, dense=False) == "triton"
    assert dispatch.select_backend(q, dense=False, backend="flex") == "flex"  # the argument wins
    calls = []
    real = registry.get("triton")
    monkeypatch.setitem(registry._REGISTRY, "triton",
                        dataclasses.replace(real, run=lambda *a: calls.append(a) or a[0]))
    kernels.attention(*_qkv(), mask=_key_valid())
    assert len(calls) == 1


def test_unknown_backend_is_a_clear_error(monkeypatch):
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="unknown attention backend 'cudnn'"):
        kernels.attention(q, k, v, backend="cudnn")
    monkeypatch.setenv(dispatch.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="FRAMECAST_ATTN"):
        kernels.attention(q, k, v)


def test_missing_backend_falls_back_with_one_log_line(monkeypatch, caplog):
    monkeypatch.setattr(dispatch, "backend_available", lambda name: name in ("sdpa", "flex"))
    q, k, v = _qkv()
    with caplog.at_level(logging.WARNING, logger="kernels.dispatch"):
        for _ in range(3):
            out = kernels.attention(q, k, v, mask=_key_valid(), backend="triton")
    lines = [r for r in caplog.records if "triton" in r.getMessage()]
    assert len(lines) == 1 and "not available" in lines[0].getMessage()
    torch.testing.assert_close(out, reference_attention(q, k, v, mask=_key_valid()), atol=2e-5, rtol=2e-5)


def test_dense_only_backends_fall_back_on_sparse_patterns(monkeypatch, caplog):
    monkeypatch.setattr(dispatch, "backend_available", lambda name: True)
    q, *_ = _qkv()
    with caplog.at_level(logging.WARNING, logger="kernels.dispatch"):
        assert dispatch.select_backend(q, dense=False, backend="flash") == "sdpa"
        assert dispatch.select_backend(q, dense=True, backend="xformers") == "sdpa"  # fp32 CPU tensors
    assert len(caplog.records) == 2


def test_auto_on_cuda_prefers_flash_for_dense_and_triton_for_sparse(monkeypatch):
    available = {"sdpa", "flex", "triton", "flash"}
    monkeypatch.setattr(dispatch, "backend_available", lambda name: name in available)
    q = torch.empty(1, 1, 1, 1, dtype=torch.bfloat16, device="meta")
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    assert dispatch.select_backend(q, dense=True) == "flash"
    assert dispatch.select_backend(q, dense=False) == "triton"
    available.discard("triton")
    assert dispatch.select_backend(q, dense=False) == "flex"
    available.discard("flash")
    assert dispatch.select_backend(q, dense=True) == "sdpa"


def test_probe_is_cached():
    dispatch.backend_available.cache_clear()
    assert dispatch.backend_available("sdpa")
    dispatch.backend_available("flash")
    assert dispatch.backend_available.cache_info().currsize == 2
    with pytest.raises(ValueError):
        dispatch.backend_available("nope")


def test_mask_and_block_list_together_are_rejected():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="not both"):
        kernels.attention(q, k, v, mask=_key_valid(), block_list=BlockList.dense(24, 40))
