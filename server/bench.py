"""`framecast bench serve --sessions 1,2,4`: N concurrent real WebSocket sessions per N, one run.

Starts an in-process server on 127.0.0.1 (or uses `--url`), and for each N runs N clients that
start a session, read chunks for `--seconds`, and stop. Reports aggregate and per-session FPS
(frames received per second after the first chunk), time to first frame, client-side chunk
interval and server-reported chunk latency (generation start -> send) p50/p95, dropped chunks,
and the aggregate-FPS ratio of the largest N to N = 1. Rich table + optional JSON.

Each client also plays its stream on a real-time `PlaybackClock` (started at its first chunk,
stalling when it runs dry), so it measures what a viewer sees: the video lead after each chunk,
underruns, and, for `--switches` prompt switches sent at random moments, the switch-to-screen
latency = media time of the first chunk under the new prompt (`session.update.applied`) minus the
play position when the update was sent (and in wall time: sent -> that frame shown on the
client's clock; the two differ when the device is behind real time and the player stalls).
After `--seconds` a client reads on (up to 60 s) until its switches are on screen. `--lead-trace S` adds one S-second session whose lead is
recorded after every chunk (its maximum after the first 3 s is the pacing bound's check).
Live sessions are paced to real time, so per-session FPS is the model's fps when the device keeps
up; `--max-lead 60` lets each session run ahead (unpaced for a short run) to measure capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from models.load_args import add_load_arguments
from server import bench_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", default="1,2,4", help="comma-separated session counts (default 1,2,4)")
    parser.add_argument("--model", default=None, help="preset or model directory (default: the server default)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: first GPU, else CPU)")
    add_load_arguments(parser)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per session count")
    parser.add_argument("--format", default="jpeg", choices=["jpeg", "fmp4"])
    parser.add_argument("--url", default=None, help="benchmark a running server (ws://host:port/v1/realtime)")
    parser.add_argument("--switches", type=int, default=5, help="prompt switches per session at random moments")
    parser.add_argument("--max-lead", type=float, default=None,
                        help="each session's max_lead_s (default: the server's; 60 measures capacity, unpaced)")
    parser.add_argument("--lead-trace", type=float, default=0.0, help="seconds of a one-session lead trace (0: none)")
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
    leads: list[tuple[float, float]] = field(default_factory=list)  # (s since first chunk, lead s) after each chunk
    underruns: int = 0  # chunks that arrived after this client's player ran dry
    switch_s: list[float] = field(default_factory=list)  # switch-to-screen latency per prompt switch (media time)
    switch_wall_s: list[float] = field(default_factory=list)  # the same in wall time: update sent -> its first frame shown
    server_switch_s: list[float] = field(default_factory=list)  # the same, as the server estimated it
    behind_events: int = 0  # `session.behind` events received


SWITCH_WARMUP_S = 2.0  # no switch before this many seconds of playback
SWITCH_TAIL_S = 1.5  # nor in the last seconds
SWITCH_GRACE_S = 60.0  # after --seconds, read on this long at most for switches not yet on screen


async def _one_session(url: str, index: int, seconds: float, fmt: str, switches: int = 0,
                       max_lead_s: float | None = None) -> SessionResult:
    import random

    import websockets

    from client.protocol.chunks import parse_chunk
    from client.protocol.events import SessionStart, SessionStop, SessionUpdate
    from server.pacing import PlaybackClock

    result = SessionResult()
    rng = random.Random(index)
    moments = sorted(rng.uniform(SWITCH_WARMUP_S, max(seconds - SWITCH_TAIL_S, SWITCH_WARMUP_S)) for _ in range(switches))
    sent_at_position: dict[str, float] = {}  # event_id -> play position when the update was sent
    unseen: dict[str, list] = {}  # event_id -> [sent at, first frame under it (from the applied event)]
    async with websockets.connect(url, compression=None, max_size=None) as ws:
        started = time.perf_counter()
        await ws.send(json.dumps(SessionStart.unchecked(prompt=f"bench session {index}", seed=index, format=fmt,
                                                        max_lead_s=max_lead_s)))
        clock: PlaybackClock | None = None  # set at session.started (fps)
        first_at = last_at = None
        first_frames = 0
        while True:
            now = time.perf_counter()
            if first_at is not None and moments and now - first_at >= moments[0]:
                moments.pop(0)
                event_id = f"s{index}-{len(sent_at_position)}"
                sent_at_position[event_id] = clock.position(now)
                unseen[event_id] = [now, None]
                await ws.send(json.dumps(SessionUpdate.unchecked(prompt=f"bench switch {event_id}", event_id=event_id)))
            if first_at is None:
                timeout = 600
            else:
                elapsed = now - first_at
                timeout = seconds + (SWITCH_GRACE_S if unseen else 0.0) - elapsed
                if moments:
                    timeout = min(timeout, moments[0] - elapsed)
                elif timeout <= 0:
                    break
            try:
                message = await asyncio.wait_for(ws.recv(), max(timeout, 0.0))
            except asyncio.TimeoutError:
                if first_at is None:
                    raise RuntimeError(f"session {index}: no chunk within {timeout:.0f} s") from None
                continue
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
                result.underruns += clock.deliver(chunk.frame_count, now)
                result.leads.append((round(now - first_at, 3), round(clock.lead(now), 3)))
                for event_id, (sent_at, frame) in list(unseen.items()):
                    if frame is not None and chunk.first_frame_index + chunk.frame_count > frame:
                        result.switch_wall_s.append(round(clock.start + frame / clock.fps - sent_at, 3))
                        del unseen[event_id]
                continue
            event = json.loads(message)
            if event["type"] == "session.started":
                clock = PlaybackClock(event["fps"])
            elif event["type"] == "stats":
                result.latencies_ms.append(event["chunk_latency_ms"])
                result.dropped = event["dropped"]
            elif event["type"] == "session.update.applied" and event["event_id"] in sent_at_position:
                result.switch_s.append(round(event["media_time_s"] - sent_at_position[event["event_id"]], 3))
                result.server_switch_s.append(event["latency_s"])
                unseen[event["event_id"]][1] = round(event["media_time_s"] * clock.fps)
            elif event["type"] == "session.behind":
                result.behind_events += 1
            elif event["type"] in ("error", "session.done"):
                raise RuntimeError(f"session {index}: {event}")
        await ws.send(json.dumps(SessionStop().dump()))
        if first_at is not None and last_at > first_at:
            result.fps = (result.frames - first_frames) / (last_at - first_at)  # frames after the first chunk
    return result


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def _max_lead_after(leads: list[tuple[float, float]], t0: float) -> float | None:
    later = [lead for t, lead in leads if t >= t0]
    return round(max(later), 3) if later else None


LEAD_SETTLE_S = 3.0  # the lead bound is checked after this many seconds of playback


async def _measure(url: str, n: int, seconds: float, fmt: str, switches: int = 0,
                   max_lead_s: float | None = None) -> dict:
    results = await asyncio.gather(*(_one_session(url, i, seconds, fmt, switches, max_lead_s) for i in range(n)))
    intervals = [x for r in results for x in r.intervals_ms]
    latencies = [x for r in results for x in r.latencies_ms]
    switch = [x for r in results for x in r.switch_s]
    switch_wall = [x for r in results for x in r.switch_wall_s]
    leads = [_max_lead_after(r.leads, LEAD_SETTLE_S) for r in results]
    return {
        "sessions": n,
        "aggregate_fps": round(sum(r.fps for r in results), 2),
        "per_session_fps": [round(r.fps, 2) for r in results],
        "ttff_s": [round(r.ttff_s, 3) if r.ttff_s is not None else None for r in results],
        "chunk_interval_ms_p50": _pct(intervals, 50), "chunk_interval_ms_p95": _pct(intervals, 95),
        "chunk_latency_ms_p50": _pct(latencies, 50), "chunk_latency_ms_p95": _pct(latencies, 95),
        "dropped": sum(r.dropped for r in results),
        "switches": len(switch),
        "switch_s_median": round(float(np.median(switch)), 3) if switch else None,
        "switch_s_worst": max(switch) if switch else None,
        "switch_wall_s_median": round(float(np.median(switch_wall)), 3) if switch_wall else None,
        "switch_wall_s_worst": max(switch_wall) if switch_wall else None,
        "max_lead_s": max((x for x in leads if x is not None), default=None),  # after the first 3 s
        "underruns": sum(r.underruns for r in results),
        "behind_events": sum(r.behind_events for r in results),
        "raw": [asdict(r) for r in results],
    }


def session_counts(text: str) -> list[int]:
    """`--sessions 1,2,4` as [1, 2, 4] (ServeError when it is not)."""
    from server.settings import ServeError

    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ServeError(f"--sessions must be comma-separated integers, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise ServeError("--sessions needs at least one count >= 1")
    return counts


@contextlib.contextmanager
def local_server(args: argparse.Namespace, max_sessions: int):
    """An in-process server on 127.0.0.1 for `--model` / `--device` / `--lora` / `--text-device`,
    no job slots; yields (its ws URL, the loaded generator)."""
    from server.app import load_model
    from server.serve import ServerThread
    from server.settings import Settings

    with tempfile.TemporaryDirectory(prefix="framecast-bench-") as data_dir:
        overrides = {"model": args.model} if args.model else {}
        overrides.update({"lora": args.lora} if args.lora else {}, text_device=args.text_device)
        settings = Settings(**overrides, host="127.0.0.1", port=0, device=args.device,
                            max_sessions=max_sessions, max_running_jobs=0, data_dir=data_dir)
        generator = load_model(settings)
        with ServerThread(settings, generator=generator) as server:
            yield server.ws_url, generator


def run(args: argparse.Namespace) -> int:
    counts = session_counts(args.sessions)
    if args.url:
        rows, trace = _run_all(args.url, args, counts)
        device = model = "remote"
    else:
        rows, trace, device, model = _run_local(args, counts)
    by_n = {r["sessions"]: r["aggregate_fps"] for r in rows}
    ratio = round(by_n[max(counts)] / by_n[min(counts)], 2) if by_n.get(min(counts)) else None
    report = bench_report.report(
        "serve", device=device, model=model, seconds=args.seconds, format=args.format, results=rows,
        aggregate_fps_ratio={"numerator_sessions": max(counts), "denominator_sessions": min(counts), "ratio": ratio},
        switches_per_session=args.switches, max_lead_s=args.max_lead, lead_trace=trace,
    )
    _print_table(report)
    bench_report.write_report(report, args.json_path)
    return 0


def _run_all(url: str, args: argparse.Namespace, counts: list[int]) -> tuple[list[dict], dict | None]:
    """The rows for each N, then the optional one-session lead trace."""
    rows = [asyncio.run(_measure(url, n, args.seconds, args.format, args.switches, args.max_lead)) for n in counts]
    trace = None
    if args.lead_trace > 0:
        result = asyncio.run(_one_session(url, 0, args.lead_trace, args.format, max_lead_s=args.max_lead))
        trace = {"seconds": args.lead_trace, "max_lead_s_after_3s": _max_lead_after(result.leads, LEAD_SETTLE_S),
                 "underruns": result.underruns, "fps": round(result.fps, 2), "leads": result.leads}
    return rows, trace


def _run_local(args: argparse.Namespace, counts: list[int]) -> tuple[list[dict], dict | None, str, str]:
    with local_server(args, max(counts)) as (url, generator):
        rows, trace = _run_all(url, args, counts)
    return rows, trace, generator.info.device, generator.info.name


def _print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"framecast bench serve — {report['model']} on {report['device']}, {report['seconds']:g} s each")
    for column in ("sessions", "aggregate FPS", "per-session FPS", "TTFF s (max)", "interval p50/p95 ms",
                   "latency p50/p95 ms", "dropped", "switch s median/worst (n)", "switch wall s median/worst", "max lead s", "underruns"):
        table.add_column(column, justify="right")
    for r in report["results"]:
        ttff = [t for t in r["ttff_s"] if t is not None]
        table.add_row(
            str(r["sessions"]), f"{r['aggregate_fps']:.1f}", ", ".join(f"{x:.1f}" for x in r["per_session_fps"]),
            f"{max(ttff):.2f}" if ttff else "-",
            f"{r['chunk_interval_ms_p50']}/{r['chunk_interval_ms_p95']}",
            f"{r['chunk_latency_ms_p50']}/{r['chunk_latency_ms_p95']}", str(r["dropped"]),
            f"{r['switch_s_median']}/{r['switch_s_worst']} ({r['switches']})",
            f"{r['switch_wall_s_median']}/{r['switch_wall_s_worst']}", str(r["max_lead_s"]), str(r["underruns"]),
        )
    Console().print(table)
    ratio = report["aggregate_fps_ratio"]
    Console().print(f"aggregate FPS ratio N={ratio['numerator_sessions']} / N={ratio['denominator_sessions']}: "
                    f"{ratio['ratio']}")
    trace = report["lead_trace"]
    if trace:
        Console().print(f"lead trace, one session for {trace['seconds']:g} s: max lead after the first "
                        f"{LEAD_SETTLE_S:g} s {trace['max_lead_s_after_3s']} s, {trace['underruns']} underruns, "
                        f"{trace['fps']} FPS")
