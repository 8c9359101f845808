"""`framecast bench serve --sessions 1,2,4`: N concurrent real WebSocket sessions per N, one run.

Starts an in-process server on 127.0.0.1 (or uses `--url`), and for each N runs N clients that
start a session, read chunks for `--seconds`, and stop. Reports aggregate and per-session FPS
(frames received per second after the first chunk), time to first frame, client-side chunk
interval and server-reported chunk latency (generation start -> send) p50/p95, dropped chunks,
and the aggregate-FPS ratio of the largest N to N = 1. Rich table + optional JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", default="1,2,4", help="comma-separated session counts (default 1,2,4)")
    parser.add_argument("--model", default=None, help="preset or model directory (default: the server default)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: first GPU, else CPU)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per session count")
    parser.add_argument("--format", default="jpeg", choices=["jpeg", "fmp4"])
    parser.add_argument("--url", default=None, help="benchmark a running server (ws://host:port/v1/realtime)")
    parser.add_argument("--json", dest="json_path", default=None, help="write the results here")


@dataclass
class SessionResult:
    """What one client measured."""

    frames: int = 0  # frames received after (and including) the first chunk
    chunks: int = 0
    ttff_s: float | None = None  # session.start sent -> first chunk received
    fps: float = 0.0  # frames / (last chunk time - first chunk time)
    intervals_ms: list[float] = field(default_factory=list)  # gaps between consecutive chunks
    latencies_ms: list[float] = field(default_factory=list)  # server stats chunk_latency_ms samples
    dropped: int = 0  # server-reported drops


async def _one_session(url: str, index: int, seconds: float, fmt: str) -> SessionResult:
    import websockets

    from client.chunk_format import parse_chunk

    result = SessionResult()
    async with websockets.connect(url, compression=None, max_size=None) as ws:
        started = time.perf_counter()
        await ws.send(json.dumps({"type": "session.start", "prompt": f"bench session {index}", "seed": index,
                                  "format": fmt}))
        first_at = last_at = None
        first_frames = 0
        while True:
            timeout = seconds - (time.perf_counter() - first_at) if first_at else 600
            if timeout <= 0:
                break
            try:
                message = await asyncio.wait_for(ws.recv(), timeout)
            except asyncio.TimeoutError:
                break
            now = time.perf_counter()
            if isinstance(message, bytes):
                chunk = parse_chunk(message)
                if first_at is None:
                    first_at, result.ttff_s, first_frames = now, now - started, chunk.frame_count
                else:
                    result.intervals_ms.append((now - last_at) * 1000)
                last_at = now
                result.frames += chunk.frame_count
                result.chunks += 1
                continue
            event = json.loads(message)
            if event["type"] == "stats":
                result.latencies_ms.append(event["chunk_latency_ms"])
                result.dropped = event["dropped"]
            elif event["type"] in ("error", "session.done"):
                raise RuntimeError(f"session {index}: {event}")
        await ws.send(json.dumps({"type": "session.stop"}))
        if first_at is not None and last_at > first_at:
            result.fps = (result.frames - first_frames) / (last_at - first_at)  # frames after the first chunk
    return result


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


async def _measure(url: str, n: int, seconds: float, fmt: str) -> dict:
    results = await asyncio.gather(*(_one_session(url, i, seconds, fmt) for i in range(n)))
    intervals = [x for r in results for x in r.intervals_ms]
    latencies = [x for r in results for x in r.latencies_ms]
    return {
        "sessions": n,
        "aggregate_fps": round(sum(r.fps for r in results), 2),
        "per_session_fps": [round(r.fps, 2) for r in results],
        "ttff_s": [round(r.ttff_s, 3) if r.ttff_s is not None else None for r in results],
        "chunk_interval_ms_p50": _pct(intervals, 50), "chunk_interval_ms_p95": _pct(intervals, 95),
        "chunk_latency_ms_p50": _pct(latencies, 50), "chunk_latency_ms_p95": _pct(latencies, 95),
        "dropped": sum(r.dropped for r in results),
        "raw": [asdict(r) for r in results],
    }


def run(args: argparse.Namespace) -> int:
    from server.settings import ServeError

    try:
        counts = [int(x) for x in args.sessions.split(",") if x.strip()]
    except ValueError:
        raise ServeError(f"--sessions must be comma-separated integers, got {args.sessions!r}") from None
    if not counts or min(counts) < 1:
        raise ServeError("--sessions needs at least one count >= 1")
    if args.url:
        rows, device, model = [asyncio.run(_measure(args.url, n, args.seconds, args.format)) for n in counts], "remote", "remote"
    else:
        rows, device, model = _run_local(args, counts)
    by_n = {r["sessions"]: r["aggregate_fps"] for r in rows}
    ratio = round(by_n[max(counts)] / by_n[min(counts)], 2) if by_n.get(min(counts)) else None
    report = {
        "benchmark": "serve", "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["framecast"] + sys.argv[1:]), "device": device, "model": model,
        "host": platform.node(), "seconds": args.seconds, "format": args.format, "results": rows,
        "aggregate_fps_ratio": {"numerator_sessions": max(counts), "denominator_sessions": min(counts), "ratio": ratio},
    }
    _print_table(report)
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(report, f, indent=2)
    return 0


def _run_local(args: argparse.Namespace, counts: list[int]) -> tuple[list[dict], str, str]:
    from server.app import load_model, pick_device
    from server.serve import ServerThread
    from server.settings import Settings

    with tempfile.TemporaryDirectory(prefix="framecast-bench-") as data_dir:
        overrides = {"model": args.model} if args.model else {}
        settings = Settings(**overrides, host="127.0.0.1", port=0, device=args.device,
                            max_sessions=max(counts), max_running_jobs=0, data_dir=data_dir)
        device = pick_device(settings.device)
        generator = load_model(settings, device)
        with ServerThread(settings, generator=generator) as server:
            rows = [asyncio.run(_measure(server.ws_url, n, args.seconds, args.format)) for n in counts]
    return rows, device, generator.info.name


def _print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"framecast bench serve — {report['model']} on {report['device']}, {report['seconds']:g} s each")
    for column in ("sessions", "aggregate FPS", "per-session FPS", "TTFF s (max)", "interval p50/p95 ms",
                   "latency p50/p95 ms", "dropped"):
        table.add_column(column, justify="right")
    for r in report["results"]:
        ttff = [t for t in r["ttff_s"] if t is not None]
        table.add_row(
            str(r["sessions"]), f"{r['aggregate_fps']:.1f}", ", ".join(f"{x:.1f}" for x in r["per_session_fps"]),
            f"{max(ttff):.2f}" if ttff else "-",
            f"{r['chunk_interval_ms_p50']}/{r['chunk_interval_ms_p95']}",
            f"{r['chunk_latency_ms_p50']}/{r['chunk_latency_ms_p95']}", str(r["dropped"]),
        )
    Console().print(table)
    ratio = report["aggregate_fps_ratio"]
    Console().print(f"aggregate FPS ratio N={ratio['numerator_sessions']} / N={ratio['denominator_sessions']}: "
                    f"{ratio['ratio']}")
