"""`framecast bench attention`: attention backends and sparse patterns at Wan2.1-1.3B shapes.

Four sections, one table each (and one JSON file with every number):
1. dense: latency and dense-equivalent TFLOP/s (4·B·H·Lq·Lk·D / t) of every available backend
   for one chunk (3 latent frames of queries) against sink + window + chunk caches of 9, 12 and
   21 attended latent frames, batch 1 and 4; with the relative error against the fp32 reference
   on the smallest shape.
2. sparse: latency of the block-sparse backends vs the kept-block fraction (top-k blocks of
   pooled q·k), and the speed-up over our own dense pattern.
3. roll: rolling the ring-buffer cache by one chunk copies no K/V bytes (kernel reads the same
   storage, bytes allocated by the roll measured with torch.cuda.memory_stats) vs a cat-based roll.
4. stream: the fused streaming kernel vs the composed rotate + concatenate path (kernels/bench_fused.py);
   `--write-table` turns it into the table `auto` reads.

`--small` swaps in CPU-sized shapes (2 heads x 32, 16 tokens per frame) so it runs here in seconds;
the Triton kernel then runs in its interpreter (numbers are meaningless, the code path is real).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from kernels.errors import KernelError
from kernels.triton_env import interpret_without_gpu


@dataclass(frozen=True)
class Shape:
    """One attention call of the streaming model: a chunk of queries against the ring cache."""

    batch: int
    heads: int
    head_dim: int
    tokens_per_frame: int
    chunk_frames: int
    attended_frames: int  # sink + window + chunk

    @property
    def q_len(self) -> int:
        return self.chunk_frames * self.tokens_per_frame

    @property
    def kv_len(self) -> int:
        return self.attended_frames * self.tokens_per_frame

    @property
    def dense_flops(self) -> float:
        return 4.0 * self.batch * self.heads * self.q_len * self.kv_len * self.head_dim


# Wan2.1-1.3B at 832x480: 12 heads x 128, 1560 tokens per latent frame, chunks of 3 latent frames
FULL = dict(heads=12, head_dim=128, tokens_per_frame=1560, chunk_frames=3, batches=(1, 4))
SMALL = dict(heads=2, head_dim=32, tokens_per_frame=16, chunk_frames=3, batches=(1, 2))
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bf16 on cuda, fp32 on cpu")
    parser.add_argument("--small", action="store_true", help="CPU-sized shapes (2 heads x 32, 16 tokens/frame)")
    parser.add_argument("--frames", default="9,12,21", help="attended latent frames (sink+window+chunk), comma list")
    parser.add_argument("--batch", default=None, help="batch sizes, comma list (default 1,4; --small 1,2)")
    parser.add_argument("--fractions", default="1,0.5,0.25,0.125", help="kept-block fractions for the sparse table")
    parser.add_argument("--backends", default=None,
                        help="comma list among sdpa,sdpa-flash,sdpa-cudnn,sdpa-efficient,flash,xformers,flex,triton")
    parser.add_argument("--block", type=int, default=None, help="block-list block size (default 128; --small 32)")
    parser.add_argument("--rep-ms", type=float, default=200.0, help="timing budget per measurement (CUDA)")
    parser.add_argument("--sections", default="dense,sparse,roll,stream",
                        help="comma list among dense,sparse,roll,stream (stream: fused kernel vs composed path)")
    parser.add_argument("--stream-batch", default="1,2", help="batch sizes of the stream section, comma list")
    parser.add_argument("--write-table", default=None, metavar="DIR",
                        help="write the stream section as the table `auto` reads (DIR/<device>.json; "
                             "kernels/tables/ is where dispatch looks)")
    parser.add_argument("--json", dest="json_path", default=None, help="write all results to this JSON file")


# ---- timing -----------------------------------------------------------------------------------

def _time_ms(fn: Callable[[], object], device: torch.device, rep_ms: float) -> float:
    """Median milliseconds per call (device events via triton.testing.do_bench on CUDA)."""
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=max(25, rep_ms / 4), rep=rep_ms, return_mode="median"))
    fn()  # warm-up (compilation, interpreter set-up)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


# ---- backends ---------------------------------------------------------------------------------

def _dense_runners(device: torch.device) -> dict[str, Callable]:
    """name -> runner, for every registered backend this process can run on ordinary calls.

    Runners take (q, k, v) plus, for the pattern-aware ones, the call's pattern: a BlockList
    (triton) or a BlockMask (flex)."""
    from kernels import registry

    runners: dict[str, Callable] = {}
    for name in registry.names():
        spec = registry.get(name)
        if spec.run is None or not registry.available(name) or (spec.half_cuda_only and device.type != "cuda"):
            continue
        if name == "triton":
            runners[name] = lambda q, k, v, bl=None, run=spec.run: run(q, k, v, None, bl)
        elif name == "flex":
            from kernels.backends import flex_function

            runners[name] = lambda q, k, v, bm=None: flex_function(q.is_cuda)(q, k, v, block_mask=bm)
        else:
            runners[name] = lambda q, k, v, run=spec.run: run(q, k, v, None, None)
    return runners


def _inputs(shape: Shape, device: torch.device, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator(device=device).manual_seed(seed)
    return [torch.randn(shape.batch, shape.heads, n, shape.head_dim, generator=g, device=device).to(dtype)
            for n in (shape.q_len, shape.kv_len, shape.kv_len)]  # [B, H, L, D] each


def _rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref).norm() / ref.norm())


# ---- sections ---------------------------------------------------------------------------------

def _bench_dense(shapes, runners, device, dtype, block, rep_ms, log) -> list[dict]:
    from kernels import BlockList, reference_attention

    rows = []
    checked = False
    for shape in shapes:
        q, k, v = _inputs(shape, device, dtype)
        dense_list = BlockList.dense(shape.q_len, shape.kv_len, block, block, device)
        ref = reference_attention(q, k, v) if not checked else None
        for name, runner in runners.items():
            if name == "triton":
                fn = lambda r=runner: r(q, k, v, dense_list)  # noqa: E731
            elif name == "flex":
                bm = dense_list.to_block_mask()
                fn = lambda r=runner, bm=bm: r(q, k, v, bm)  # noqa: E731
            else:
                fn = lambda r=runner: r(q, k, v)  # noqa: E731
            row = dict(section="dense", backend=name, **asdict(shape), q_len=shape.q_len, kv_len=shape.kv_len)
            try:
                out = fn()
                if ref is not None:
                    row["rel_error"] = _rel_error(out, ref)
                ms = _time_ms(fn, device, rep_ms)
                row.update(ms=ms, tflops=shape.dense_flops / (ms * 1e-3) / 1e12)
            except Exception as exc:  # a backend that cannot run this shape / dtype: report, go on
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
            rows.append(row)
            log(row)
        checked = True
        del q, k, v, ref
    return rows


def _bench_sparse(shapes, runners, fractions, device, dtype, block, rep_ms, log) -> list[dict]:
    from kernels import BlockList
    from kernels.masks import topk_block_list

    rows = []
    for shape in shapes:
        q, k, v = _inputs(shape, device, dtype, seed=1)
        dense_ms: dict[str, float] = {}
        for fraction in fractions:
            if fraction >= 1:
                bl = BlockList.dense(shape.q_len, shape.kv_len, block, block, device)
            else:
                bl = topk_block_list(q, k, keep_fraction=fraction, block_q=block, block_kv=block)
            kept = bl.kept_fraction()
            for name in ("triton", "flex"):
                if name not in runners:
                    continue
                arg = bl if name == "triton" else bl.to_block_mask()
                fn = lambda r=runners[name], a=arg: r(q, k, v, a)  # noqa: E731
                row = dict(section="sparse", backend=name, pattern="dense" if fraction >= 1 else "topk",
                           fraction=fraction, kept_fraction=kept, **asdict(shape))
                try:
                    ms = _time_ms(fn, device, rep_ms)
                    dense_ms.setdefault(name, ms)
                    row.update(ms=ms, tflops=shape.dense_flops / (ms * 1e-3) / 1e12,
                               vs_dense=ms / dense_ms[name])
                except Exception as exc:
                    row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
                rows.append(row)
                log(row)
        del q, k, v
    return rows


def _bench_roll(shape: Shape, device: torch.device, dtype: torch.dtype, block: int) -> dict:
    """Advance the ring by one chunk twice: our roll (write the chunk into its slots, recompute
    the block list) vs a cat-based roll (shift the window). Counts K/V bytes copied/allocated."""
    from kernels import BlockList, RingLayout

    sink = min(3, shape.attended_frames - 2 * shape.chunk_frames)
    window = shape.attended_frames - sink - shape.chunk_frames
    layout = RingLayout(sink, window, shape.chunk_frames, shape.tokens_per_frame)
    k_ring = torch.randn(shape.batch, shape.heads, layout.kv_len, shape.head_dim, device=device).to(dtype)
    chunk_k = torch.randn(shape.batch, shape.heads, layout.q_len, shape.head_dim, device=device).to(dtype)
    ptr = k_ring.data_ptr()
    frames = sink + window  # cache full: every roll evicts

    def allocated() -> int:
        if device.type != "cuda":
            return -1
        torch.cuda.synchronize()
        return torch.cuda.memory_stats(device)["allocated_bytes.all.allocated"]

    def ring_roll(frames_written: int) -> BlockList:
        tpf = shape.tokens_per_frame
        for i in range(shape.chunk_frames):  # commit the previous chunk's frames into their slots (new data)
            slot = layout.slot_of_frame(frames_written - shape.chunk_frames + i)
            k_ring[:, :, slot * tpf:(slot + 1) * tpf] = chunk_k[:, :, i * tpf:(i + 1) * tpf]
        return BlockList.from_key_padding(layout.kv_valid(frames_written, device), layout.q_len, block, block)

    ring_roll(frames)  # warm caches of small index tensors
    before = allocated()
    for step in range(2):
        ring_roll(frames + (step + 1) * shape.chunk_frames)
    ours = allocated() - before if before >= 0 else -1
    same_storage = k_ring.data_ptr() == ptr

    kv_cat = k_ring.clone()
    before = allocated()
    s_tok, c_tok = sink * shape.tokens_per_frame, layout.q_len
    for _ in range(2):  # the copy-based roll most reference implementations do
        kv_cat = torch.cat([kv_cat[:, :, :s_tok], kv_cat[:, :, s_tok + c_tok:], chunk_k], dim=2)
    naive = allocated() - before if before >= 0 else -1
    kv_bytes = k_ring.numel() * k_ring.element_size()
    return dict(section="roll", **asdict(shape), kv_bytes_per_tensor=kv_bytes, same_storage=same_storage,
                ring_roll_bytes_allocated=ours, cat_roll_bytes_allocated=naive,
                chunk_bytes_written=2 * chunk_k.numel() * chunk_k.element_size())


# ---- entry point ------------------------------------------------------------------------------

def _parse_list(text: str, kind=float) -> list:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise KernelError(f"not a comma-separated list of numbers: {text!r}") from None


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise KernelError("--device cuda requested but CUDA is not available")
    if device.type == "cpu":
        interpret_without_gpu(force=True)  # only effective if triton is not imported yet
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    preset = SMALL if args.small else FULL
    block = args.block or (32 if args.small else 128)
    batches = _parse_list(args.batch, int) if args.batch else list(preset["batches"])
    frames = _parse_list(args.frames, int)
    fractions = _parse_list(args.fractions, float)
    if any(f < 2 * preset["chunk_frames"] for f in frames):
        raise KernelError(f"--frames must be >= {2 * preset['chunk_frames']} (sink + window + chunk)")
    shapes = [Shape(b, preset["heads"], preset["head_dim"], preset["tokens_per_frame"], preset["chunk_frames"], f)
              for b in batches for f in frames]

    runners = _dense_runners(device)
    if args.backends:
        wanted = [x.strip() for x in args.backends.split(",")]
        unknown = [x for x in wanted if x not in runners]
        if unknown:
            raise KernelError(f"backend(s) {unknown} not available here; available: {', '.join(runners)}")
        runners = {name: runners[name] for name in wanted}

    from rich.console import Console
    from kernels.registry import available as backend_available

    console = Console()
    console.print(f"[bold]attention bench[/] device={_device_name(device)} dtype={dtype} block={block} "
                  f"backends={','.join(runners)}")

    if "triton" not in runners and not backend_available("triton") and device.type == "cpu":
        console.print("triton: not available (triton was imported before TRITON_INTERPRET was set: "
                      "run as `TRITON_INTERPRET=1 framecast bench attention --small`)", style="yellow")

    def log(row: dict) -> None:
        if "error" in row:
            console.print(f"  {row['backend']}: {row['error']}", style="yellow")

    sections = {x.strip() for x in args.sections.split(",")}
    dense = _bench_dense(shapes, runners, device, dtype, block, args.rep_ms, log) if "dense" in sections else []
    sparse = (_bench_sparse(shapes, runners, fractions, device, dtype, block, args.rep_ms, log)
              if "sparse" in sections else [])
    roll = _bench_roll(shapes[-1], device, dtype, block) if "roll" in sections else None
    _print_tables(console, dense, sparse, roll)
    stream = []
    if "stream" in sections:
        from kernels import bench_fused

        stream = bench_fused.bench_stream(args.small, _parse_list(args.stream_batch, int), device, dtype, _time_ms,
                                          args.rep_ms, log)
        bench_fused.print_table(console, stream)
        if args.write_table:
            path = bench_fused.write_table(stream, Path(args.write_table), _device_name(device),
                                           "framecast bench attention " + " ".join(_argv_of(args)))
            console.print(f"wrote {path}")

    if args.json_path:
        report = dict(
            date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            device=_device_name(device), dtype=str(dtype), block=block, torch=torch.__version__,
            triton=_version("triton"), python=platform.python_version(),
            command="framecast bench attention " + " ".join(_argv_of(args)),
            dense=dense, sparse=sparse, roll=roll, stream=stream,
        )
        with open(args.json_path, "w") as fh:
            json.dump(report, fh, indent=2)
        console.print(f"wrote {args.json_path}")
    return 0


def _print_tables(console, dense: list[dict], sparse: list[dict], roll: dict | None) -> None:
    from rich.table import Table

    def fmt(x, spec):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)

    t = Table(title="dense: one chunk vs sink+window+chunk (dense-equivalent TFLOP/s = 4·B·H·Lq·Lk·D / t)")
    for col in ("B", "frames", "Lq x Lk", "backend", "ms", "TFLOP/s", "rel err"):
        t.add_column(col, justify="right")
    for r in dense:
        t.add_row(str(r["batch"]), str(r["attended_frames"]), f"{r['q_len']}x{r['kv_len']}", r["backend"],
                  fmt(r.get("ms"), ".3f"), fmt(r.get("tflops"), ".3g"),
                  fmt(r.get("rel_error"), ".1e") if "error" not in r else "n/a")
    if dense:
        console.print(t)

    t = Table(title="sparse: latency vs kept-block fraction (top-k of pooled q·k)")
    for col in ("B", "frames", "backend", "fraction", "kept", "ms", "x dense", "TFLOP/s (dense-eq)"):
        t.add_column(col, justify="right")
    for r in sparse:
        t.add_row(str(r["batch"]), str(r["attended_frames"]), r["backend"], f"{r['fraction']:g}",
                  f"{r['kept_fraction']:.3f}", fmt(r.get("ms"), ".3f"), fmt(r.get("vs_dense"), ".2f"),
                  fmt(r.get("tflops"), ".3g"))
    if sparse:
        console.print(t)

    if roll is None:
        return
    mib = 1 / 2**20
    console.print(
        f"roll (B={roll['batch']}, {roll['attended_frames']} frames, 2 chunks): K storage unchanged: "
        f"{roll['same_storage']}; K/V bytes copied by the ring roll: 0 (new chunk written: "
        f"{roll['chunk_bytes_written'] * mib:.1f} MiB); bytes allocated: ring roll "
        f"{_bytes(roll['ring_roll_bytes_allocated'])}, cat-based roll {_bytes(roll['cat_roll_bytes_allocated'])} "
        f"(one K tensor = {roll['kv_bytes_per_tensor'] * mib:.1f} MiB)"
    )


def _bytes(n: int) -> str:
    if n < 0:
        return "n/a (CPU)"
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n} B"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def _argv_of(args: argparse.Namespace) -> list[str]:
    skip = {"func", "command", "bench_kind", "json_path"}
    out = []
    for key, value in vars(args).items():
        if key in skip or value in (None, False):
            continue
        flag = "--" + key.replace("_", "-")
        out += [flag] if value is True else [flag, str(value)]
    return out
