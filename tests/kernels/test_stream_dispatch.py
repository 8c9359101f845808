"""`kernels.stream_attention`: which path runs (forced, auto, measured table), fallbacks, gradients."""

import json
import logging

import pytest
import torch

import kernels
from kernels import dispatch, registry, streaming, tuning
from kernels.reference import reference_stream_attention
from tests.kernels.stream_cases import ring_call


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    dispatch.log_fallback.cache_clear()
    tuning.clear_cache()
    yield
    dispatch.log_fallback.cache_clear()
    tuning.clear_cache()


def _spy(monkeypatch, name):
    """Count the calls of the fused kernel entry point."""
    import kernels.stream_kernel as sk

    calls = []
    real = sk.stream_attention_forward
    monkeypatch.setattr(sk, "stream_attention_forward", lambda call, *a: calls.append(call) or real(call, *a))
    return calls


@pytest.mark.parametrize("backend", ["fused", "sdpa", "triton", "flex"])
def test_every_backend_matches_the_reference(backend, monkeypatch):
    calls = _spy(monkeypatch, "fused")
    call = ring_call(frames_written=(3, 9), rows=[1, 0], seed=11)
    out = kernels.stream_attention(call, backend)
    torch.testing.assert_close(out, reference_stream_attention(call), atol=2e-5, rtol=2e-5)
    assert len(calls) == (backend == "fused")


def test_env_var_is_the_default_and_the_argument_wins(monkeypatch):
    calls = _spy(monkeypatch, "fused")
    call = ring_call(seed=1)
    monkeypatch.setenv(dispatch.ENV_VAR, "fused")
    kernels.stream_attention(call)
    assert len(calls) == 1
    kernels.stream_attention(call, "sdpa")
    assert len(calls) == 1


def test_auto_on_cpu_composes():
    assert streaming.select_stream_backend(ring_call()) == "auto"


def test_fused_falls_back_with_one_log_line_when_it_cannot_run(monkeypatch, caplog):
    call = ring_call(head_dim=48, seed=2)  # not a power of two
    with caplog.at_level(logging.WARNING, logger="kernels.dispatch"):
        for _ in range(2):
            out = kernels.stream_attention(call, "fused")
    assert len(caplog.records) == 1 and "power-of-two" in caplog.records[0].getMessage()
    torch.testing.assert_close(out, reference_stream_attention(call), atol=2e-5, rtol=2e-5)


def test_stream_only_backend_forced_on_ordinary_calls_is_silent_auto(caplog):
    q = torch.randn(1, 2, 8, 16)
    with caplog.at_level(logging.WARNING, logger="kernels.dispatch"):
        assert dispatch.select_backend(q, dense=True, backend="fused") == "sdpa"
    assert not caplog.records


def _fake_cuda(monkeypatch, device_name="Fake GPU 9000"):
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    monkeypatch.setattr(tuning, "_device_name", lambda index: device_name)


def _table(tmp_path, monkeypatch, call, fused_ms, composed_ms, device_name="Fake GPU 9000"):
    b, lq, h, d = call.q.shape
    row = dict(dtype="float32", heads=h, head_dim=d, tokens_per_frame=call.tokens_per_frame, q_len=lq,
               cache_len=call.cache_k.shape[1], batch=b, fused_ms=fused_ms, composed_ms=composed_ms)
    tuning.table_path(device_name, tmp_path).write_text(json.dumps({"device": device_name, "stream": [row]}))
    monkeypatch.setattr(tuning, "TABLE_DIR", tmp_path)


def test_auto_on_cuda_without_a_table_keeps_the_composed_path(monkeypatch, tmp_path):
    call = ring_call()
    monkeypatch.setattr(tuning, "TABLE_DIR", tmp_path)
    _fake_cuda(monkeypatch)
    monkeypatch.setattr(streaming, "why_not_stream", lambda name, c: None)
    assert streaming.select_stream_backend(call) == "auto"


@pytest.mark.parametrize("fused_ms, composed_ms, expected", [(1.0, 2.0, "fused"), (2.0, 1.0, "auto")])
def test_auto_on_cuda_follows_the_measured_table(monkeypatch, tmp_path, fused_ms, composed_ms, expected):
    call = ring_call()
    _table(tmp_path, monkeypatch, call, fused_ms, composed_ms)
    _fake_cuda(monkeypatch)
    monkeypatch.setattr(streaming, "why_not_stream", lambda name, c: None)
    assert streaming.select_stream_backend(call) == expected


def test_table_row_choice_nearest_cache_then_batch():
    rows = [dict(dtype="bfloat16", heads=12, head_dim=128, tokens_per_frame=1560, q_len=4680, cache_len=c, batch=b,
                 fused_ms=f, composed_ms=1.0) for c, b, f in ((9360, 1, 0.5), (18720, 1, 2.0), (18720, 4, 0.5))]
    args = ("bfloat16", 12, 128, 1560, 4680)
    assert tuning.choose(rows, *args, cache_len=9000, batch=1) is True
    assert tuning.choose(rows, *args, cache_len=18720, batch=1) is False
    assert tuning.choose(rows, *args, cache_len=18720, batch=3) is True
    assert tuning.choose(rows, "float16", *args[1:], cache_len=18720, batch=1) is None
    assert tuning.device_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


def test_fused_gradients_equal_the_reference():
    call = ring_call(frames_written=(2, 8), seed=4, requires_grad=True)
    out = kernels.stream_attention(call, "fused")
    ref = reference_stream_attention(call)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (call.q, call.k, call.v), grad)
    want = torch.autograd.grad(ref, (call.q, call.k, call.v), grad)
    for g, w in zip(got, want):
        assert g.abs().max() > 0
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


def test_registry_lists_every_builtin_and_rejects_unknown_names():
    assert {"sdpa", "flex", "triton", "flash", "xformers", "fused", "sdpa-flash"} <= set(registry.names())
    assert set(dispatch.BACKENDS) == {"auto", *registry.names()}
    assert registry.get("fused").run is None and registry.get("fused").run_stream is not None
    with pytest.raises(ValueError, match="unknown attention backend 'nope'"):
        registry.get("nope")
