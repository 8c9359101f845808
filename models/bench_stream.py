"""`framecast bench stream`: what one stream costs, chunk by chunk, stage by stage.

Times every chunk of `--chunks` chunks of `--batch` streams stepped together, split into the
transformer's denoising passes, the cache-write pass, and VAE decode + device->host copy; reports
first-chunk latency, steady-state FPS, the cost of late chunks relative to early ones (the rolling
cache must make it constant) and peak memory. Prints a table, writes JSON with every chunk.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from datetime import date
from pathlib import Path

import torch

from models.load_args import add_load_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="shapes", help="model directory or preset (default: shapes)")
    p.add_argument("--chunks", type=int, default=50, help="chunks to generate per stream (default: 50)")
    p.add_argument("--batch", type=int, default=1, help="streams stepped together (default: 1)")
    p.add_argument("--device", default=None, help="cpu, cuda (default: first GPU, else CPU)")
    add_load_arguments(p)
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None, help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--json", type=Path, help="write every measurement to this JSON file")


class StageTimer:
    """Wraps generator methods to accumulate their wall time (synchronising the GPU around them)."""

    def __init__(self, device: torch.device):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.totals: dict[str, float] = {}

    def wrap(self, obj, name: str, stage: str) -> None:
        inner = getattr(obj, name)

        def timed(*args, **kwargs):
            self.sync()
            t0 = time.perf_counter()
            out = inner(*args, **kwargs)
            self.sync()
            self.totals[stage] = self.totals.get(stage, 0.0) + time.perf_counter() - t0
            return out

        setattr(obj, name, timed)

    def take(self) -> dict[str, float]:
        out, self.totals = self.totals, {}
        return out


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from models.errors import ModelError
    from models.generator import default_device, load_generator

    if args.chunks < 2 or args.batch < 1:
        raise ModelError("need --chunks >= 2 and --batch >= 1")
    device = torch.device(args.device) if args.device else default_device()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}.get(args.dtype)
    console = Console()
    t_load = time.perf_counter()
    try:
        gen = load_generator(args.model, device=device, max_batch=args.batch, dtype=dtype, lora=args.lora,
                             text_device=args.text_device)
    except (ValueError, RuntimeError) as exc:
        raise ModelError(str(exc)) from None
    load_s = time.perf_counter() - t_load
    timer = StageTimer(device)
    timer.wrap(gen, "denoise", "denoise_s")
    timer.wrap(gen, "_commit", "cache_write_s")
    timer.wrap(gen, "decode", "vae_decode_s")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    t_open = time.perf_counter()
    streams = [gen.open_stream(f"benchmark prompt {i}", seed=i) for i in range(args.batch)]
    rows = []
    with console.status("streaming...") as status:
        for i in range(args.chunks):
            t0 = time.perf_counter()
            chunks = gen.step(streams)
            wall = time.perf_counter() - t0
            frames = sum(c.frames.shape[0] for c in chunks)
            rows.append({"chunk": i, "frames": frames, "total_s": wall, **timer.take()})
            if i == 0:
                first_chunk_s = time.perf_counter() - t_open
            status.update(f"chunk {i + 1}/{args.chunks}: {wall * 1000:.0f} ms")
    for s in streams:
        gen.close_stream(s)

    steady = rows[1:]
    steady_frames = sum(r["frames"] for r in steady)
    steady_s = sum(r["total_s"] for r in steady)
    # constant cost per chunk: median of an early window (after the first chunk) vs the last window
    window = max(5, len(steady) // 10)
    early = statistics.median(r["total_s"] for r in steady[:window])
    late = statistics.median(r["total_s"] for r in steady[-window:])
    result = {
        "date": date.today().isoformat(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "model": args.model,
        "resolution": f"{gen.info.width}x{gen.info.height}",
        "chunk_frames": gen.info.chunk_frames,
        "steps": gen.info.steps,
        "batch": args.batch,
        "dtype": str(gen.dtype).replace("torch.", ""),
        "load_s": load_s,
        "first_chunk_s": first_chunk_s,
        "fps": steady_frames / steady_s,
        "fps_per_stream": steady_frames / steady_s / args.batch,
        "late_over_early_chunk_cost": late / early,  # medians of the first and last `window` steady chunks
        "cost_window_chunks": window,
        "peak_memory_mb": _peak_memory_mb(device),
        "mean_s": {k: statistics.mean(r[k] for r in steady) for k in ("total_s", "denoise_s", "cache_write_s", "vae_decode_s")},
        "chunks": rows,
    }

    table = Table(title=f"bench stream: {args.model} on {result['device']} ({result['resolution']}, {gen.info.steps} steps, batch {args.batch})")
    for col in ("chunk", "frames", "denoise ms", "cache write ms", "VAE decode ms", "total ms"):
        table.add_column(col, justify="right")
    shown = sorted({0, 1, min(10, args.chunks - 1), args.chunks // 2, args.chunks - 1})
    for i in shown:
        r = rows[i]
        table.add_row(str(i), str(r["frames"]), *(f"{r[k] * 1000:.1f}" for k in ("denoise_s", "cache_write_s", "vae_decode_s", "total_s")))
    console.print(table)
    console.print(
        f"first chunk {first_chunk_s * 1000:.0f} ms | {result['fps']:.1f} FPS ({result['fps_per_stream']:.1f} per stream) | "
        f"late/early chunk cost {result['late_over_early_chunk_cost']:.3f} | peak memory {result['peak_memory_mb']:.0f} MiB"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {args.json}")
    return 0
