"""Measured tables that let `auto` pick the fused streaming kernel where it is faster.

`framecast bench attention --write-table DIR` times the fused kernel against the composed path
(rotate + concatenate + the best ordinary backend) at streaming shapes and writes one small JSON
per device, `DIR/<device slug>.json`:

    {"device": "NVIDIA H100 80GB HBM3", "date": ..., "command": ...,
     "stream": [{"dtype": "bfloat16", "heads": 12, "head_dim": 128, "tokens_per_frame": 1560,
                 "q_len": 4680, "cache_len": 18720, "batch": 1, "fused_ms": ..., "composed_ms": ...}, ...]}

Dispatch reads the table for the current device from `TABLE_DIR` (kernels/tables/, shipped with
the package). With no table, or no row for the call's (dtype, heads, head dim, tokens per frame,
chunk length), `auto` keeps the composed path; otherwise it follows the row nearest in cache
length, then batch. Decisions are cached per shape, and read only tensor shapes (no device sync).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import torch

TABLE_DIR = Path(__file__).parent / "tables"


def device_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (the table's file name)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def table_path(device_name: str, directory: Path | None = None) -> Path:
    return (directory or TABLE_DIR) / f"{device_slug(device_name)}.json"


@functools.cache
def _load(path: Path) -> tuple[dict, ...]:
    if not path.is_file():
        return ()
    return tuple(json.loads(path.read_text()).get("stream", ()))


def choose(rows: tuple[dict, ...] | list[dict], dtype: str, heads: int, head_dim: int, tokens_per_frame: int,
           q_len: int, cache_len: int, batch: int) -> bool | None:
    """Whether the row nearest to this shape measured fused faster (None: no comparable row)."""
    same = [r for r in rows if (r["dtype"], r["heads"], r["head_dim"], r["tokens_per_frame"], r["q_len"])
            == (dtype, heads, head_dim, tokens_per_frame, q_len) and r.get("fused_ms") and r.get("composed_ms")]
    if not same:
        return None
    best = min(same, key=lambda r: (abs(r["cache_len"] - cache_len), abs(r["batch"] - batch)))
    return best["fused_ms"] < best["composed_ms"]


@functools.cache
def _decide(device_name: str, dtype: str, heads: int, head_dim: int, tokens_per_frame: int, q_len: int,
            cache_len: int, batch: int, directory: Path) -> bool:
    rows = _load(table_path(device_name, directory))
    return bool(choose(rows, dtype, heads, head_dim, tokens_per_frame, q_len, cache_len, batch))


@functools.cache
def _device_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


def prefers_fused(call) -> bool:
    """For a CUDA `StreamCall`: whether the measured table says the fused kernel is faster."""
    b, q_len, heads, head_dim = call.q.shape
    name = _device_name(call.q.device.index or 0)
    return _decide(name, str(call.q.dtype).removeprefix("torch."), heads, head_dim, call.tokens_per_frame,
                   q_len, call.cache_k.shape[1], b, TABLE_DIR)


def clear_cache() -> None:
    """Forget loaded tables and decisions (after writing a table; tests)."""
    _load.cache_clear()
    _decide.cache_clear()
