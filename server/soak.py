"""`framecast bench soak --sessions N --minutes M`: a server under a mix of careless clients.

Starts `framecast serve` as a child process (or watches `--url` + `--pid`), then keeps N client
slots busy for M minutes, each running one scenario after another: clean stops, closes without
`session.stop`, aborted sockets, slow readers (tiny receive buffer, reading a chunk now and then)
and bad inputs (malformed JSON, huge integers, oversized and long-thin images) before a session.
Every `--interval` seconds it samples the server process: RSS, open file descriptors, threads,
and the p95 gap between chunks seen by the normally reading clients in that window. Prints a
table over time and a summary (RSS slope after warm-up, sessions by scenario, errors by code),
and writes JSON. Errors other than the typed client codes are counted as unexpected.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from server import bench_report

SCENARIOS = ("stop", "close", "abort", "slow_reader", "bad_inputs")
EXPECTED_ERRORS = {"bad_request", "unsupported", "too_large"}  # what the bad inputs provoke; the session goes on
TYPED_REFUSALS = {"capacity": 1013, "unauthorized": 1008}  # typed errors that close the socket (code -> close code)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", type=int, default=4, help="concurrent client slots (= server max sessions)")
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to soak")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--chunks", type=int, default=3, help="chunks a session reads before it ends")
    parser.add_argument("--model", default=None, help="preset or model directory (default: the server default)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: first GPU, else CPU)")
    parser.add_argument("--url", default=None, help="soak a running server (http://host:port); needs --pid")
    parser.add_argument("--pid", type=int, default=None, help="the running server's process id (with --url)")
    parser.add_argument("--seed", type=int, default=0, help="scenario order")
    parser.add_argument("--json", dest="json_path", default=None, help="write the results here")


@dataclass
class Tally:
    """What the clients saw, cumulative, plus the chunk gaps of the current window."""

    sessions: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SCENARIOS})
    errors: dict[str, int] = field(default_factory=dict)  # error event code -> count
    unexpected: list[str] = field(default_factory=list)  # internal errors, failed connects, ...
    gaps_ms: list[float] = field(default_factory=list)  # reset at every sample


def _png_data_url(size: tuple[int, int]) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", size).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


BAD_INPUTS = [
    "{not json",
    '{"type": "session.start", "prompt": "x", "seed": ' + "9" * 5000 + "}",
    json.dumps({"type": "session.start", "prompt": "x", "seed": "seven"}),
    json.dumps({"type": "session.warp"}),
    json.dumps({"type": "session.update", "prompt": "too early"}),
]


async def _scenario(url: str, kind: str, index: int, chunks: int, tally: Tally, images: list[str]) -> None:
    import websockets

    ws_url = url.replace("http", "ws", 1) + "/v1/realtime"
    kwargs = {"compression": None, "max_size": None, "open_timeout": 60}
    if kind == "slow_reader":
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        host, port = url.removeprefix("http://").rsplit(":", 1)
        sock.connect((host, int(port)))
        kwargs.update(sock=sock, max_queue=1)
    async with websockets.connect(ws_url, **kwargs) as ws:
        if kind == "bad_inputs":
            for text in BAD_INPUTS + [json.dumps({"type": "session.start", "prompt": "x", "image": i}) for i in images]:
                await ws.send(text)
        await ws.send(json.dumps({"type": "session.start", "prompt": f"soak {kind} {index % 7}", "seed": index}))
        received, last = 0, None
        while received < chunks:
            if kind == "slow_reader":
                await asyncio.sleep(1.0)
            message = await asyncio.wait_for(ws.recv(), 300)
            if isinstance(message, bytes):
                now = time.monotonic()
                if last is not None and kind != "slow_reader":
                    tally.gaps_ms.append((now - last) * 1000)
                last, received = now, received + 1
                continue
            event = json.loads(message)
            if event["type"] == "error":
                tally.errors[event["code"]] = tally.errors.get(event["code"], 0) + 1
                if event["code"] in TYPED_REFUSALS:  # e.g. a slot not yet freed by the previous session
                    return
                if event["code"] not in EXPECTED_ERRORS:
                    tally.unexpected.append(f"{kind}: {event['code']}: {event['message']}")
                    return
        if kind in ("stop", "bad_inputs", "slow_reader"):
            await ws.send(json.dumps({"type": "session.stop"}))
            while True:  # until session.done (chunks and stats may come first)
                message = await asyncio.wait_for(ws.recv(), 300)
                if isinstance(message, str) and json.loads(message)["type"] == "session.done":
                    break
        elif kind == "abort":
            ws.transport.abort()
        # "close": leaving the block closes the socket without session.stop
    tally.sessions[kind] += 1


async def _client_slot(url: str, slot: int, deadline: float, args, tally: Tally, images: list[str]) -> None:
    rng = random.Random(args.seed * 1000 + slot)
    index = slot
    while time.monotonic() < deadline:
        kind = rng.choice(SCENARIOS)
        try:
            await _scenario(url, kind, index, args.chunks, tally, images)
        except Exception as exc:  # a refused or dropped connection is a finding, not a crash of the soak
            received = getattr(getattr(exc, "rcvd", None), "code", None)
            if received not in TYPED_REFUSALS.values():  # a typed refusal was counted from its error event
                tally.unexpected.append(f"{kind}: {type(exc).__name__}: {exc}"[:200])
            await asyncio.sleep(1.0)
        index += args.sessions


def _sample(process, started: float, tally: Tally) -> dict:
    gaps, tally.gaps_ms = tally.gaps_ms, []
    return {
        "t_s": round(time.monotonic() - started, 1),
        "rss_mb": round(process.memory_info().rss / 2**20, 1),
        "open_fds": process.num_fds(),
        "threads": process.num_threads(),
        "chunk_gap_ms_p95": round(float(np.percentile(gaps, 95)), 1) if gaps else None,
        "sessions_done": sum(tally.sessions.values()),
        "errors": sum(tally.errors.values()),
        "unexpected": len(tally.unexpected),
    }


async def _soak(url: str, pid: int, args) -> tuple[list[dict], Tally]:
    import psutil

    process = psutil.Process(pid)
    tally = Tally()
    images = [_png_data_url((16_000_000, 1)), _png_data_url((2000, 1500))]  # long-thin (too_large), big (resized)
    started = time.monotonic()
    deadline = started + args.minutes * 60
    samples = [_sample(process, started, tally)]
    slots = [asyncio.create_task(_client_slot(url, i, deadline, args, tally, images)) for i in range(args.sessions)]
    while time.monotonic() < deadline:
        await asyncio.sleep(min(args.interval, max(deadline - time.monotonic(), 0.1)))
        samples.append(_sample(process, started, tally))
        _print_row(samples[-1])
    await asyncio.gather(*slots, return_exceptions=True)
    await asyncio.sleep(2.0)  # let the server tear the last sessions down
    samples.append(_sample(process, started, tally))
    _print_row(samples[-1])
    return samples, tally


def _spawn_server(args, data_dir: str) -> tuple[subprocess.Popen, str]:
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "client.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--max-sessions", str(args.sessions), "--data-dir", data_dir]
    command += ["--model", args.model] if args.model else []
    command += ["--device", args.device] if args.device else []
    log = open(Path(data_dir) / "server.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env={k: v for k, v in os.environ.items() if not k.startswith("FRAMECAST_")})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"framecast serve exited: {(Path(data_dir) / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("framecast serve did not become healthy in 600 s")


def _rss_slope_mb_per_min(samples: list[dict]) -> float | None:
    """Least-squares slope of RSS over time, after the first third (warm-up: allocator, caches)."""
    tail = samples[len(samples) // 3:]
    if len(tail) < 2:
        return None
    t = np.array([s["t_s"] for s in tail]) / 60
    rss = np.array([s["rss_mb"] for s in tail])
    return round(float(np.polyfit(t, rss, 1)[0]), 2)


def run(args: argparse.Namespace) -> int:
    from server.settings import ServeError

    if args.sessions < 1 or args.minutes <= 0:
        raise ServeError("--sessions must be >= 1 and --minutes > 0")
    if args.url and args.pid is None:
        raise ServeError("--url needs --pid (the server process to sample)")
    with tempfile.TemporaryDirectory(prefix="framecast-soak-") as data_dir:
        process = None
        if args.url:
            url, pid = args.url.rstrip("/"), args.pid
        else:
            process, url = _spawn_server(args, data_dir)
            pid = process.pid
        try:
            samples, tally = asyncio.run(_soak(url, pid, args))
        finally:
            if process is not None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
    report = bench_report.report(
        "soak", cpus=os.cpu_count(), model=args.model or "default", device=args.device or "default",
        sessions=args.sessions, minutes=args.minutes, samples=samples, sessions_by_scenario=tally.sessions,
        errors_by_code=tally.errors, unexpected=tally.unexpected[:50], unexpected_count=len(tally.unexpected),
        rss_first_mb=samples[0]["rss_mb"], rss_last_mb=samples[-1]["rss_mb"],
        rss_slope_mb_per_min=_rss_slope_mb_per_min(samples),
    )
    _print_summary(report)
    bench_report.write_report(report, args.json_path)
    return 0


def _print_row(sample: dict) -> None:
    print(f"t={sample['t_s']:7.1f}s  rss={sample['rss_mb']:7.1f} MB  fds={sample['open_fds']:4d}  "
          f"threads={sample['threads']:3d}  gap p95={sample['chunk_gap_ms_p95']} ms  "
          f"sessions={sample['sessions_done']}  errors={sample['errors']}  unexpected={sample['unexpected']}",
          flush=True)


def _print_summary(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"framecast bench soak — {report['sessions']} slots, {report['minutes']:g} min")
    for column in ("t s", "RSS MB", "open fds", "threads", "chunk gap p95 ms", "sessions done", "errors", "unexpected"):
        table.add_column(column, justify="right")
    for s in report["samples"]:
        table.add_row(str(s["t_s"]), str(s["rss_mb"]), str(s["open_fds"]), str(s["threads"]),
                      str(s["chunk_gap_ms_p95"]), str(s["sessions_done"]), str(s["errors"]), str(s["unexpected"]))
    console = Console()
    console.print(table)
    console.print(f"RSS {report['rss_first_mb']} -> {report['rss_last_mb']} MB, slope after warm-up "
                  f"{report['rss_slope_mb_per_min']} MB/min; sessions {report['sessions_by_scenario']}; "
                  f"errors {report['errors_by_code']}; unexpected {report['unexpected_count']}")
    for line in report["unexpected"][:10]:
        console.print(f"  unexpected: {line}")
