"""The causal Wan DiT, its rolling KV cache, schedule, VAE, text encoders and the streaming generator.

The public names are imported lazily, so `from models.config import ...` does not pay for torch
model code and diffusers.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "CausalWanTransformer": "models.transformer",
    "CapacityError": "models.generator",
    "Chunk": "models.generator",
    "ModelInfo": "models.generator",
    "ResumeState": "models.resume",
    "StreamingGenerator": "models.generator",
    "StreamState": "models.generator",
    "load_generator": "models.generator",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
