"""The `stream` section of `framecast bench attention`: the fused kernel vs the composed path.

At the streaming model's shape (Wan2.1-1.3B: 12 heads x 128, 1560 tokens per latent frame, a
chunk of 3 frames against sink 3 + window 9 slots), for a half-filled and a full ring, it times
- `composed`: what the model did before the fused kernel: read the rows, rotate cache + chunk
  keys, concatenate, attend with a key mask through `kernels.attention` (auto: flash-attn or SDPA);
- `fused`: kernels/stream_kernel.py (ring read in place, RoPE on load, invalid tiles skipped),
and reports ms, TFLOP/s over the attended keys (4·B·H·Lq·Lk_valid·D / t), the speed-up, and the
fused output's relative error against the fp32 reference. `--write-table DIR` stores the
comparison as the table `auto` reads (kernels/tuning.py).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Callable

import torch

from kernels.streaming import StreamCall, StreamRope

WAN = dict(heads=12, head_dim=128, tokens_per_frame=1560, width=52, sink=3, window=9, chunk=3)
SMALL = dict(heads=2, head_dim=32, tokens_per_frame=16, width=4, sink=3, window=3, chunk=3)


def ring_call(batch=2, heads=2, head_dim=32, tokens_per_frame=12, width=4, sink=2, window=4, chunk=2,
              frames_written=(0, 5), rows=None, max_batch=None, dtype=torch.float32, device="cpu", seed=0,
              requires_grad=False, local_radius=None, local_recent=1) -> StreamCall:
    """A random `StreamCall` laid out like the model's rolling cache, for `batch` streams that
    have committed `frames_written[i]` frames each (frames_written > sink + window: a wrapped ring).

    Slot validity and window-relative positions follow models/kv_cache.py: frame f sits in slot
    f (sink) or sink + (f - sink) % window; held frames get positions 0.. oldest first, the chunk
    follows. RoPE tables are Wan-like (temporal pairs by frame position, the rest by row/column).
    local_radius: spatial locality over window frames older than the newest `local_recent`.
    """
    g = torch.Generator().manual_seed(seed)
    slots = sink + window
    valid = torch.zeros(batch, slots, dtype=torch.bool)
    local = torch.zeros(batch, slots, dtype=torch.bool)
    pos = torch.zeros(batch, slots + chunk, dtype=torch.long)
    for i, n in enumerate(frames_written):
        held = list(range(min(n, sink))) + list(range(max(sink, n - window), n))
        for p, f in enumerate(held):
            slot = f if f < sink else sink + (f - sink) % window
            valid[i, slot], pos[i, slot] = True, p
            local[i, slot] = sink <= f < n - local_recent
        pos[i, slots:] = torch.arange(len(held), len(held) + chunk)
    pt = (head_dim - 4 * (head_dim // 6)) // 2
    ps = head_dim // 2 - pt
    inv_t = 10000.0 ** (-torch.arange(pt, dtype=torch.float64) / pt)
    inv_s = 10000.0 ** (-torch.arange(ps, dtype=torch.float64) / ps)
    tok = torch.arange(tokens_per_frame)
    coord = torch.where(torch.arange(ps) < ps // 2, (tok // width)[:, None], (tok % width)[:, None])  # [T, Ps]
    ang_f, ang_g = pos.double()[..., None] * inv_t, coord.double() * inv_s
    rope = StreamRope(*(t.float().to(device) for t in (ang_f.cos(), ang_f.sin(), ang_g.cos(), ang_g.sin())))
    lq = chunk * tokens_per_frame
    max_batch = max_batch or batch + 1

    def rand(*shape):
        t = torch.randn(*shape, generator=g).to(device=device, dtype=dtype)
        return t.requires_grad_(requires_grad) if requires_grad else t

    rows = torch.tensor(rows if rows is not None else list(range(batch)), device=device)
    cache = [torch.randn(max_batch, slots * tokens_per_frame, heads, head_dim, generator=g).to(device=device, dtype=dtype)
             for _ in range(2)]
    return StreamCall(q=rand(batch, lq, heads, head_dim), k=rand(batch, lq, heads, head_dim),
                      v=rand(batch, lq, heads, head_dim), cache_k=cache[0], cache_v=cache[1], rows=rows,
                      slot_valid=valid.to(device), rope=rope, contiguous=None,
                      slot_local=local.to(device) if local_radius is not None else None,
                      local_radius=local_radius or 0, frame_width=width)


def bench_stream(small: bool, batches: list[int], device: torch.device, dtype: torch.dtype,
                 time_ms: Callable, rep_ms: float, log) -> list[dict]:
    """Rows of the stream section (see module docstring)."""
    from kernels.reference import reference_stream_attention
    from kernels.streaming import run_composed, select_stream_backend, why_not_stream
    from kernels.stream_kernel import stream_attention_forward
    from kernels.dispatch import select_backend

    shape = SMALL if small else WAN
    full = shape["sink"] + shape["window"]
    rows = []
    checked = False
    for batch in batches:
        for state, written in (("half", shape["sink"] + shape["window"] // 3), ("full", 10 * full)):
            call = ring_call(batch=batch, frames_written=(written,) * batch, dtype=dtype, device=device,
                             seed=batch, **{k: v for k, v in shape.items()})
            lq, t = call.q.shape[1], call.tokens_per_frame
            valid_keys = int(call.slot_valid[0].sum()) * t + lq
            flops = 4.0 * batch * shape["heads"] * lq * valid_keys * shape["head_dim"]
            inner = select_backend(call.q.transpose(1, 2), dense=False)
            row = dict(section="stream", ring=state, dtype=str(dtype).removeprefix("torch."), batch=batch,
                       heads=shape["heads"], head_dim=shape["head_dim"], tokens_per_frame=t, q_len=lq,
                       cache_len=call.cache_k.shape[1], valid_keys=valid_keys, composed_backend=inner,
                       auto_choice=select_stream_backend(call))
            try:
                row["composed_ms"] = time_ms(lambda: run_composed(call, "auto"), device, rep_ms)
                row["composed_tflops"] = flops / (row["composed_ms"] * 1e-3) / 1e12
            except Exception as exc:  # report, go on
                row["composed_error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
            reason = why_not_stream("fused", call)
            if reason is None:
                if not checked:
                    ref = reference_stream_attention(call)
                    out = stream_attention_forward(call)
                    row["fused_rel_error"] = float((out.float() - ref).norm() / ref.norm())
                    checked = True
                    del ref, out
                row["fused_ms"] = time_ms(lambda: stream_attention_forward(call), device, rep_ms)
                row["fused_tflops"] = flops / (row["fused_ms"] * 1e-3) / 1e12
                if "composed_ms" in row:
                    row["speedup"] = row["composed_ms"] / row["fused_ms"]
            else:
                row["fused_error"] = reason
            rows.append(row)
            log(row)
            del call
    return rows


def write_table(rows: list[dict], directory: Path, device_name: str, command: str) -> Path:
    """The measured rows as the table `auto` reads (kernels/tuning.py)."""
    from kernels.tuning import clear_cache, table_path

    keep = ("dtype", "heads", "head_dim", "tokens_per_frame", "q_len", "cache_len", "batch", "ring",
            "fused_ms", "composed_ms", "composed_backend")
    stream = [{k: r[k] for k in keep if k in r} for r in rows if "fused_ms" in r and "composed_ms" in r]
    path = table_path(device_name, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(
        device=device_name, date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        torch=torch.__version__, command=command, stream=stream), indent=2) + "\n")
    clear_cache()
    return path


def print_table(console, rows: list[dict]) -> None:
    from rich.table import Table

    t = Table(title="stream: one chunk vs the ring cache, fused (RoPE on load, in place) vs composed (rotate + cat)")
    for col in ("B", "ring", "Lq x Lk(valid)", "composed", "ms", "TFLOP/s", "fused ms", "TFLOP/s", "x", "rel err", "auto"):
        t.add_column(col, justify="right")

    def f(x, spec):
        return "-" if x is None else format(x, spec)

    for r in rows:
        t.add_row(str(r["batch"]), r["ring"], f"{r['q_len']}x{r['valid_keys']}", r["composed_backend"],
                  f(r.get("composed_ms"), ".3f"), f(r.get("composed_tflops"), ".3g"), f(r.get("fused_ms"), ".3f"),
                  f(r.get("fused_tflops"), ".3g"), f(r.get("speedup"), ".2f"), f(r.get("fused_rel_error"), ".1e"),
                  r["auto_choice"])
    console.print(t)
