"""`framecast bench hostile`: issue 18's targets for careless and hostile clients, measured.

One in-process server (the model and `--max-sessions` given) and three checks (`--checks`):

- `teardown`: `--sessions N` sessions, `--slots` at a time, each started and then ended by closing
  its socket or aborting it without a close handshake (alternately), right after `session.start`,
  or (every `--chunk-every`-th) after `session.started` or after its first chunk; the run stops
  early after `--teardown-minutes`. RSS after the first 100 endings and after all, and the live per-session objects
  (`live_objects`) once every connection is gone: counted before any garbage collection (what
  reference counting freed) and after one. Target: RSS after N <= RSS after 100 + 50 MB, and the
  objects back to their count before the first session.
- `ping-flood`: a client that never reads sends `session.ping` as fast as its socket takes them
  until the server disconnects it (or `--flood-seconds` pass). RSS before, its peak while (sampled
  every 50 ms) and after; pings sent, close code. Target: growth <= 20 MB, then disconnected.
- `image-attack`: one live session reads chunks for `--phase-seconds` alone, then as long while 3
  attackers (in a process of their own) send `session.start` with a 1x16,000,000 PNG (16 KB: legal
  by pixel count, refused by its aspect ratio) over and over (reconnecting when cut off), then
  alone again. Its p95 gap between chunks with the attackers over the p95 of both phases without
  them (interleaved, so a change in the machine's load hits both), and per phase the messages the
  server refused, the reads it left out because the attackers' refusal budget was spent
  (server/limits.py) and the load average. Target: <= 1.5.

The other clients run in the server's process, so the RSS figures are the process's: a client-side
leak would count against the server, never for it. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import io
import json
import os
import tempfile
import threading
import time

from server import bench_report

CHECKS = ("teardown", "ping-flood", "image-attack")
RSS_AFTER_FIRST = 100  # endings before the teardown's reference RSS sample
TEARDOWN_TARGET_MB = 50.0
FLOOD_TARGET_MB = 20.0
GAP_TARGET_RATIO = 1.5
ATTACKERS = 3
SETTLE_S = 120.0  # teardown: how long the last sessions may take to be freed after their sockets end


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated, of {', '.join(CHECKS)}")
    parser.add_argument("--model", default=None, help="preset or model directory (default: the server default)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: first GPU, else CPU)")
    parser.add_argument("--max-sessions", type=int, default=4, help="the server's max sessions (default 4)")
    parser.add_argument("--sessions", type=int, default=1000, help="teardown: sessions ended (default 1000)")
    parser.add_argument("--slots", type=int, default=None, help="teardown: sessions at a time (default max sessions)")
    parser.add_argument("--chunk-every", type=int, default=10,
                        help="teardown: every Nth session ends after session.started or a chunk, the others at once")
    parser.add_argument("--teardown-minutes", type=float, default=30.0, help="teardown: stop after (default 30)")
    parser.add_argument("--flood-seconds", type=float, default=60.0, help="ping-flood: give up after (default 60)")
    parser.add_argument("--phase-seconds", type=float, default=40.0,
                        help="image-attack: seconds of each phase, alone / attacked / alone (default 40)")
    parser.add_argument("--json", dest="json_path", default=None, help="write the results here")


def live_objects() -> dict[str, int]:
    """Instances of the per-session classes that are alive now (no garbage collection is run)."""
    from models.vae import StreamingDecoder
    from server.engine import EngineStream
    from server.outbox import Outbox
    from server.routes.realtime import RealtimeConnection
    from server.session import Session

    kinds = {kind: kind.__name__ for kind in (Session, EngineStream, RealtimeConnection, Outbox, StreamingDecoder)}
    counts = dict.fromkeys([*kinds.values(), "StreamState"], 0)
    for obj in gc.get_objects():
        kind = type(obj)  # not isinstance: a dead weakref proxy raises on it
        name = kinds.get(kind) or ("StreamState" if kind.__name__ == "StreamState" else None)
        if name:
            counts[name] += 1
    return counts


def _rss_mb() -> float:
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


def _connect(url: str, **kwargs):
    import websockets

    return websockets.connect(url, compression=None, max_size=None, open_timeout=120, **kwargs)


async def _next(ws, kind: str | None = None, timeout: float = 300.0):
    """The next message (a JSON event of `kind` when given, skipping chunks and other events)."""
    while True:
        message = await asyncio.wait_for(ws.recv(), timeout)
        if kind is None:
            return message
        if isinstance(message, str) and json.loads(message)["type"] in (kind, "error"):
            return json.loads(message)


# ---- teardown -----------------------------------------------------------------------------------

ENDINGS = ("abort_at_once", "close_at_once", "abort_started", "close_started", "abort_after_chunk",
           "close_after_chunk")  # when the socket goes: right after session.start, after session.started, after a chunk


async def _one_ending(url: str, how: str, index: int, tally: dict) -> bool:
    """Start a session and end it without session.stop as `how` says; False when it was refused."""
    import websockets

    async with _connect(url) as ws:
        try:
            await ws.send(json.dumps({"type": "session.start", "prompt": f"teardown {index % 5}", "seed": index}))
            if how.endswith("at_once"):
                event = {"type": "session.started"}  # gone before the answer
            else:
                event = await _next(ws, "session.started")
        except websockets.ConnectionClosed as exc:  # refused at the door: every slot taken (1013)
            event = {"type": "error", "code": "capacity" if exc.rcvd and exc.rcvd.code == 1013 else "closed"}
        if event["type"] == "error":
            tally["refused" if event["code"] == "capacity" else "errors"] += 1
            return False
        if how.endswith("after_chunk"):
            while not isinstance(await _next(ws), bytes):
                pass
        if how.startswith("abort"):
            ws.transport.abort()  # no close handshake
        # "close": leaving the block closes the socket
    tally[how] += 1
    return True


async def _teardown(url: str, sessions: int, slots: int, chunk_every: int, max_s: float, state) -> dict:
    tally = {**dict.fromkeys(ENDINGS, 0), "refused": 0, "errors": 0}
    gc.collect()
    before = live_objects()
    rss = {"start": _rss_mb()}
    ended = 0
    counter = iter(range(10**9))
    started = time.monotonic()

    async def slot() -> None:
        nonlocal ended
        while ended < sessions and time.monotonic() - started < max_s:
            index = next(counter)
            if index % chunk_every == chunk_every - 1:  # every chunk_every-th: after session.started or a chunk
                how = ENDINGS[2 + (index // chunk_every) % 4]
            else:
                how = ENDINGS[index % 2]
            if await _one_ending(url, how, index, tally):
                ended += 1
                if ended == RSS_AFTER_FIRST:
                    rss["after_first"] = _rss_mb()
            else:
                await asyncio.sleep(0.2)  # the slot of the session just ended is not free yet

    await asyncio.gather(*(slot() for _ in range(slots)))
    seconds = time.monotonic() - started
    deadline = time.monotonic() + SETTLE_S  # the device thread runs the last closes after its step in flight
    while (state.connections or state.engine.live_sessions or live_objects() != before) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    settle_s = time.monotonic() - started - seconds
    rss["after_all"] = _rss_mb()
    by_refcount = live_objects()
    gc.collect()
    after_gc = live_objects()
    rss.setdefault("after_first", None)
    growth = None if rss["after_first"] is None else round(rss["after_all"] - rss["after_first"], 1)
    return {
        "sessions": ended, "slots": slots, "seconds": round(seconds, 1), "settle_s": round(settle_s, 1),
        "endings": tally, "rss_mb": rss, "rss_growth_after_first_mb": growth,
        "live_objects_before": before, "live_objects_after": by_refcount, "live_objects_after_gc": after_gc,
        "pass": growth is not None and growth <= TEARDOWN_TARGET_MB and by_refcount == before,
    }


# ---- ping flood ---------------------------------------------------------------------------------

class _PeakRss:
    """The process's RSS sampled on a thread every 50 ms while in use; `.peak` in MB."""

    def __init__(self):
        self.peak = _rss_mb()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def _run(self) -> None:
        while not self._done.wait(0.05):
            self.peak = max(self.peak, _rss_mb())

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


async def _ping_flood(url: str, seconds: float) -> dict:
    import websockets

    gc.collect()
    before = _rss_mb()
    sent, pongs, close_code = 0, 0, None
    started = time.monotonic()
    with _PeakRss() as peak:
        async with _connect(url, max_queue=1) as ws:  # reads one message, then never again
            try:
                while time.monotonic() - started < seconds:
                    await ws.send('{"type": "session.ping"}')
                    sent += 1
            except websockets.ConnectionClosed:
                pass
            try:  # now read what the server queued for it, up to its close
                while True:
                    message = await asyncio.wait_for(ws.recv(), 60)
                    pongs += isinstance(message, str) and json.loads(message)["type"] == "pong"
            except (websockets.ConnectionClosed, asyncio.TimeoutError):
                pass
            close_code = ws.close_code
        flood_s = time.monotonic() - started
        await asyncio.sleep(1.0)
    gc.collect()
    after = _rss_mb()
    growth = round(peak.peak - before, 1)
    return {"pings_sent": sent, "pongs_received": pongs, "seconds": round(flood_s, 1), "close_code": close_code,
            "disconnected": close_code is not None, "rss_before_mb": before, "rss_peak_mb": peak.peak,
            "rss_after_mb": after, "rss_growth_mb": growth,
            "pass": close_code is not None and growth <= FLOOD_TARGET_MB}


# ---- image attack -------------------------------------------------------------------------------

def _thin_png_url() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (16_000_000, 1)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


async def _attacker(url: str, message: str, stop, tally: dict) -> None:
    import websockets

    while not stop.is_set():
        try:
            async with _connect(url) as ws:
                while not stop.is_set():
                    await ws.send(message)
                    event = await _next(ws, "session.started")
                    tally[event.get("code", event["type"])] = tally.get(event.get("code", event["type"]), 0) + 1
        except (websockets.ConnectionClosed, OSError):
            tally["reconnects"] = tally.get("reconnects", 0) + 1
            await asyncio.sleep(0.05)


def _attack_process(url: str, attacking, stop, replies) -> None:
    """ATTACKERS clients in a process of their own (their Python work must not take the server
    process's GIL: only what the server does for them may show in the victim's gaps)."""
    async def attack() -> dict:
        tally: dict[str, int] = {}
        message = json.dumps({"type": "session.start", "prompt": "attack", "image": _thin_png_url()})
        tasks = [asyncio.create_task(_attacker(url, message, stop, tally)) for _ in range(ATTACKERS)]
        while not tally and not stop.is_set():
            await asyncio.sleep(0.05)
        attacking.set()  # the first refusal came back: the attack is on
        await asyncio.gather(*tasks)
        return tally

    replies.put(asyncio.run(attack()))


def _server_counts(state) -> dict[str, float]:
    """The server's refusal counters now (messages refused, reads left out for a spent budget)."""
    registry = state.metrics.registry
    return {key: registry.get_sample_value(name) or 0.0 for key, name in (
        ("refused", "framecast_refused_messages_total"), ("throttled", "framecast_throttled_reads_total"))}


async def _image_attack(url: str, phase_s: float, state) -> dict:
    import multiprocessing

    import numpy as np

    context = multiprocessing.get_context("spawn")
    gaps: dict[str, list[float]] = {"alone": [], "attacked": []}
    attacks: dict[str, int] = {}
    phases = []  # per phase: the server's refusal counters and the machine's load average
    async with _connect(url) as ws:
        await ws.send(json.dumps({"type": "session.start", "prompt": "the victim: a red circle", "seed": 1}))
        while not isinstance(await _next(ws), bytes):  # the first chunk: warm from here
            pass
        for phase in ("alone", "attacked", "alone"):
            attacker = None
            if phase == "attacked":
                attacking, stop, replies = context.Event(), context.Event(), context.Queue()
                attacker = context.Process(target=_attack_process, args=(url, attacking, stop, replies), daemon=True)
                attacker.start()
                if not await asyncio.to_thread(attacking.wait, 300):
                    raise RuntimeError("the attackers got no answer in 300 s")
            deadline, last, counts = time.monotonic() + phase_s, None, _server_counts(state)
            while time.monotonic() < deadline:
                if isinstance(await _next(ws), bytes):
                    now = time.monotonic()
                    if last is not None:
                        gaps[phase].append((now - last) * 1000)
                    last = now
            after = _server_counts(state)
            phases.append({"phase": phase, **{f"server_{k}": int(after[k] - counts[k]) for k in after},
                           "load_average_1m": round(os.getloadavg()[0], 1)})
            if attacker is not None:
                stop.set()
                attacks = await asyncio.to_thread(replies.get, True, 120)
                await asyncio.to_thread(attacker.join, 60)
        await ws.send(json.dumps({"type": "session.stop"}))
        await _next(ws, "session.done")
    p95 = {k: round(float(np.percentile(v, 95)), 1) if v else None for k, v in gaps.items()}
    ratio = round(p95["attacked"] / p95["alone"], 2) if p95["alone"] and p95["attacked"] else None
    return {"phase_seconds": phase_s, "attackers": ATTACKERS, "chunks": {k: len(v) for k, v in gaps.items()},
            "gap_ms_p95": p95, "gap_ms_median": {k: round(float(np.median(v)), 1) if v else None
                                                 for k, v in gaps.items()},
            "attacker_replies": attacks, "phases": phases, "p95_ratio": ratio,
            "pass": ratio is not None and ratio <= GAP_TARGET_RATIO}


# ---- command ------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    from server.app import load_model
    from server.serve import ServerThread
    from server.settings import ServeError, Settings

    checks = [c.strip() for c in args.checks.split(",") if c.strip()]
    if not checks or set(checks) - set(CHECKS):
        raise ServeError(f"--checks must name some of {', '.join(CHECKS)}")
    if min(args.sessions, args.max_sessions, args.chunk_every) < 1 or min(
            args.flood_seconds, args.phase_seconds, args.teardown_minutes) <= 0:
        raise ServeError("--sessions, --max-sessions and --chunk-every must be >= 1; the durations > 0")
    slots = min(args.slots or args.max_sessions, args.max_sessions)
    results = {}
    with tempfile.TemporaryDirectory(prefix="framecast-bench-") as data_dir:
        overrides = {"model": args.model} if args.model else {}
        settings = Settings(**overrides, host="127.0.0.1", port=0, device=args.device, max_sessions=args.max_sessions,
                            max_running_jobs=0, data_dir=data_dir)
        generator = load_model(settings)
        with ServerThread(settings, generator=generator) as server:
            state = server.app.state.framecast
            for check in checks:
                if check == "teardown":
                    results[check] = asyncio.run(_teardown(server.ws_url, args.sessions, slots, args.chunk_every,
                                                           args.teardown_minutes * 60, state))
                elif check == "ping-flood":
                    results[check] = asyncio.run(_ping_flood(server.ws_url, args.flood_seconds))
                else:
                    results[check] = asyncio.run(_image_attack(server.ws_url, args.phase_seconds, state))
                print(check, json.dumps(results[check]), flush=True)
    report = bench_report.report("hostile", device=generator.info.device, model=generator.info.name,
                                 max_sessions=args.max_sessions, results=results)
    _print_table(report)
    bench_report.write_report(report, args.json_path)
    return 0


def _print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"framecast bench hostile — {report['model']} on {report['device']}")
    for column in ("check", "measured", "target", "pass"):
        table.add_column(column)
    r = report["results"]
    if "teardown" in r:
        t = r["teardown"]
        table.add_row("teardown", f"{t['sessions']} sessions: RSS {t['rss_mb'].get('after_first')} MB after "
                      f"{RSS_AFTER_FIRST} -> {t['rss_mb']['after_all']} MB (+{t['rss_growth_after_first_mb']}); "
                      f"live objects {sum(t['live_objects_after'].values())} (before: "
                      f"{sum(t['live_objects_before'].values())})",
                      f"+<= {TEARDOWN_TARGET_MB:g} MB, objects back", str(t["pass"]))
    if "ping-flood" in r:
        f = r["ping-flood"]
        table.add_row("ping-flood", f"{f['pings_sent']} pings in {f['seconds']} s: RSS +{f['rss_growth_mb']} MB peak, "
                      f"close code {f['close_code']}", f"<= {FLOOD_TARGET_MB:g} MB, disconnected", str(f["pass"]))
    if "image-attack" in r:
        a = r["image-attack"]
        table.add_row("image-attack", f"gap p95 {a['gap_ms_p95']['alone']} ms alone, {a['gap_ms_p95']['attacked']} ms "
                      f"with {a['attackers']} attackers: x{a['p95_ratio']}", f"<= x{GAP_TARGET_RATIO:g}",
                      str(a["pass"]))
    Console().print(table)
