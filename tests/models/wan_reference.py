"""The official Wan reference implementation (PyPI `wan22`) as a test oracle, on CPU.

`wan22` is installed with `--no-deps` (its wheel requires flash_attn; see scripts/setup.sh). Its
`wan/__init__.py` imports every pipeline, so the module files are imported through stub packages
`wan` and `wan.modules` whose `__path__` points at the installed folders. `model.py`'s
`flash_attention` is replaced by an fp32 SDPA equivalent that masks keys past `k_lens` (and, when
`block_mask` is set, applies a block-causal self-attention mask so the reference can play the
causal students' rollouts).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F


def _stub_package(name: str, path: Path) -> None:
    if name not in sys.modules:
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module


def load() -> types.SimpleNamespace:
    """`model`, `vae2_1`, `t5`, `tokenizers` modules of the reference (skips the test if not installed)."""
    if _loaded:
        return _loaded[0]
    spec = importlib.util.find_spec("wan")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the Wan reference code is not installed (scripts/setup.sh --dev installs wan22 --no-deps)")
    root = Path(list(spec.submodule_search_locations)[0])
    if not (root / "modules" / "model.py").exists():
        pytest.skip(f"{root} is not the wan22 package")
    pytest.importorskip("einops")
    pytest.importorskip("ftfy")
    _stub_package("wan", root)
    _stub_package("wan.modules", root / "modules")
    model = importlib.import_module("wan.modules.model")
    model.flash_attention = sdpa_flash_attention
    vae = importlib.import_module("wan.modules.vae2_1")
    # t5.py evaluates torch.cuda.current_device() in a default argument at import time
    with _patched(torch.cuda, "current_device", lambda: "cpu"):
        t5 = importlib.import_module("wan.modules.t5")
    tokenizers = importlib.import_module("wan.modules.tokenizers")
    _loaded.append(types.SimpleNamespace(model=model, vae2_1=vae, t5=t5, tokenizers=tokenizers))
    return _loaded[0]


_loaded: list[types.SimpleNamespace] = []  # the modules, once imported (the stub packages hide `wan`'s spec)


@contextlib.contextmanager
def _patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


# self-attention mask [L, L] (True = may attend) applied by sdpa_flash_attention while set
block_mask: torch.Tensor | None = None


def sdpa_flash_attention(q, k, v, q_lens=None, k_lens=None, dropout_p=0.0, softmax_scale=None, q_scale=None,
                         causal=False, window_size=(-1, -1), deterministic=False, dtype=None, version=None):
    """The reference's `flash_attention(q, k, v, ...)` on `[B, L, N, D]`, in fp32 with SDPA."""
    assert not causal and tuple(window_size) == (-1, -1) and q_scale is None and dropout_p == 0.0
    b, lq, lk = q.shape[0], q.shape[1], k.shape[1]
    if q_lens is not None:
        assert bool((q_lens == lq).all()), "padded queries are not used by these tests"
    mask = torch.ones(b, 1, lq, lk, dtype=torch.bool, device=q.device)
    if k_lens is not None:
        mask &= (torch.arange(lk, device=q.device)[None, :] < k_lens.to(q.device)[:, None])[:, None, None, :]
    if block_mask is not None and lq == lk == block_mask.shape[0]:
        mask &= block_mask.to(q.device)
    out = F.scaled_dot_product_attention(q.transpose(1, 2).float(), k.transpose(1, 2).float(),
                                         v.transpose(1, 2).float(), attn_mask=mask, scale=softmax_scale)
    return out.transpose(1, 2).type_as(q)  # [B, Lq, N, D]


def perturb(module: torch.nn.Module, std: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Add noise to every parameter (Wan zero-initialises its head and norms: exercise every term)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return module


def tiny_wan_model(ref, seed: int = 0, **overrides):
    """A random tiny reference `WanModel` (t2v) in fp32, eval mode."""
    kw = dict(model_type="t2v", patch_size=(1, 2, 2), text_len=16, in_dim=16, dim=64, ffn_dim=128, freq_dim=32,
              text_dim=48, out_dim=16, num_heads=2, num_layers=2, eps=1e-6)
    kw.update(overrides)
    torch.manual_seed(seed)
    return perturb(ref.model.WanModel(**kw), seed=seed).eval()


def reference_forward(wan_model, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The reference forward on framecast's shapes: x [B, C, F, H, W], per-frame t [B, F] (given to
    the reference per token, [B, seq_len]), text [B, Lt, text_dim]. Returns [B, C, F, H, W]."""
    pt, ph, pw = wan_model.patch_size
    f, h, w = x.shape[2] // pt, x.shape[3] // ph, x.shape[4] // pw
    seq_len = f * h * w
    per_token = t.float().repeat_interleave(h * w, dim=1)  # [B, seq_len]
    out = wan_model(list(x), t=per_token, context=list(text), seq_len=seq_len)
    return torch.stack(out)
