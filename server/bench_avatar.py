"""`framecast bench avatar --model shapes-avatar --sessions 1,2`: audio-to-screen latency and FPS of
live avatar sessions.

Starts an in-process server (or uses `--url`); each of N sessions opens with a face, as an avatar client
does (`--image`: by default a simple face drawn for session i; speed and latency do not depend on it), streams
microphone-like audio in real time (20 ms PCM pieces of silence, with `--bursts` short tone bursts at
random moments) and plays the stream on a real-time `PlaybackClock`, as a viewer would. For each burst:

- **playable latency**: burst sent -> arrival of the chunk whose frames cover the burst's media
  time (the first moment a player holds the frame the burst drives);
- **screen latency**: burst sent -> that frame's time on the player's clock (later than playable
  when the player holds some lead).

Reports p50/p95 of both, per-session FPS and underruns. Table + optional JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from models.load_args import add_load_arguments

RATE = 16000  # what the bench's clients send
PIECE_S = 0.02
BURST_S = 0.2
WARMUP_S = 2.0  # no burst before this much audio


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", default="1", help="comma-separated session counts (default 1)")
    parser.add_argument("--model", default=None, help="an avatar preset or model directory (default: the server's)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: first GPU, else CPU)")
    add_load_arguments(parser)
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of audio per session")
    parser.add_argument("--bursts", type=int, default=10, help="tone bursts per session")
    parser.add_argument("--format", default="fmp4", choices=["jpeg", "fmp4"])
    parser.add_argument("--image", default="face",
                        help="each session's start image: a picture file (e.g. from `python -m distill.avatar_sample`), "
                             "'face' (default: a simple face drawn for session i) or 'none' (no start image: the model "
                             "draws a face, and the first chunk is a single frame)")
    parser.add_argument("--url", default=None, help="benchmark a running server (ws://host:port/v1/realtime)")
    parser.add_argument("--json", dest="json_path", default=None, help="write the results here")


@dataclass
class AvatarResult:
    """What one client measured."""

    frames: int = 0
    fps: float = 0.0  # frames / (last chunk - first chunk), after the first chunk
    playable_s: list[float] = field(default_factory=list)  # per burst: sent -> its chunk arrived
    screen_s: list[float] = field(default_factory=list)  # per burst: sent -> its frame on the player's clock
    underruns: int = 0
    ttff_s: float | None = None
    first_chunk_frames: int = 0


def drawn_face(index: int, size: int = 64) -> bytes:
    """PNG of a simple face (head, eyes, closed mouth) in colours that vary with `index`: a start image for
    session `index`. Speed and latency do not depend on the picture, only on there being one."""
    import io

    from PIL import Image, ImageDraw

    rng = random.Random(index)
    image = Image.new("RGB", (size, size), tuple(rng.randrange(40, 120) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    s = size / 64
    draw.ellipse((16 * s, 10 * s, 48 * s, 54 * s), fill=tuple(rng.randrange(150, 240) for _ in range(3)))
    for x in (24, 36):
        draw.ellipse((x * s, 25 * s, (x + 4) * s, 29 * s), fill=(20, 20, 20))
    draw.line((27 * s, 42 * s, 37 * s, 42 * s), fill=(90, 30, 30), width=max(1, round(2 * s)))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def session_image(choice: str, index: int) -> str | None:
    """The data URL session `index` starts from (`--image`), or None."""
    import base64
    import mimetypes
    from pathlib import Path

    if choice == "none":
        return None
    if choice == "face":
        data, mime = drawn_face(index), "image/png"
    else:
        data, mime = Path(choice).read_bytes(), mimetypes.guess_type(choice)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


async def _one_session(url: str, index: int, seconds: float, bursts: int, fmt: str, image: str | None) -> AvatarResult:
    import websockets

    from client.protocol.chunks import pack_input, parse_chunk
    from client.protocol.events import AudioInput, SessionStart, SessionStop
    from server.pacing import PlaybackClock

    rng = random.Random(index)
    starts = sorted(rng.uniform(WARMUP_S, max(seconds - 1.0, WARMUP_S)) for _ in range(bursts))
    sent_at: dict[float, float] = {}  # burst media time -> wall time its first piece was sent
    result = AvatarResult()
    async with websockets.connect(url, compression=None, max_size=None) as ws:
        began = time.perf_counter()
        await ws.send(json.dumps(SessionStart.unchecked(prompt="a face speaking", seed=index, format=fmt, image=image,
                                                        audio=AudioInput(sample_rate=RATE))))
        clock: PlaybackClock | None = None
        while clock is None:
            event = json.loads(await ws.recv())
            if event["type"] == "session.started":
                clock = PlaybackClock(event["fps"])
            elif event["type"] == "error":
                raise RuntimeError(f"session {index}: {event}")

        async def feed() -> None:
            t0, piece = time.perf_counter(), round(PIECE_S * RATE)
            t = np.arange(round(seconds * RATE)) / RATE
            loud = np.zeros_like(t, dtype=bool)
            for s in starts:
                loud |= (t >= s) & (t < s + BURST_S)
            audio = (np.sin(2 * np.pi * 220 * t) * 20000 * loud).astype("<i2")
            for i in range(0, len(audio), piece):
                await asyncio.sleep(max(0.0, t0 + (i + piece) / RATE - time.perf_counter()))  # captured, then sent
                await ws.send(pack_input("audio", audio[i:i + piece].tobytes(), media_time_us=i * 1_000_000 // RATE))
                for s in starts:
                    if s not in sent_at and i / RATE <= s < (i + piece) / RATE:
                        sent_at[s] = time.perf_counter()

        async def read() -> None:
            first_at = last_at = None
            first_frames = 0
            pending = list(starts)
            deadline = time.perf_counter() + seconds + 300  # a device behind real time shows bursts late
            while pending and time.perf_counter() < deadline:
                try:
                    message = await asyncio.wait_for(ws.recv(), deadline - time.perf_counter())
                except asyncio.TimeoutError:
                    break
                now = time.perf_counter()
                if not isinstance(message, bytes):
                    if json.loads(message)["type"] == "error":
                        raise RuntimeError(f"session {index}: {message}")
                    continue
                chunk = parse_chunk(message)
                if first_at is None:
                    first_at, first_frames, result.ttff_s = now, chunk.frame_count, now - began
                    result.first_chunk_frames = first_frames
                last_at = now
                result.frames += chunk.frame_count
                result.underruns += clock.deliver(chunk.frame_count, now)
                end_s = (chunk.first_frame_index + chunk.frame_count) / clock.fps
                for s in [s for s in pending if s < end_s and s in sent_at]:
                    pending.remove(s)
                    result.playable_s.append(round(now - sent_at[s], 3))
                    result.screen_s.append(round(max(clock.start + s, now) - sent_at[s], 3))
            if last_at is not None and last_at > first_at:
                result.fps = round((result.frames - first_frames) / (last_at - first_at), 2)

        await asyncio.gather(feed(), read())
        await ws.send(json.dumps(SessionStop().dump()))
    return result


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


async def _measure(url: str, n: int, args: argparse.Namespace) -> dict:
    results = await asyncio.gather(*(_one_session(url, i, args.seconds, args.bursts, args.format,
                                                  session_image(args.image, i)) for i in range(n)))
    playable = [x for r in results for x in r.playable_s]
    screen = [x for r in results for x in r.screen_s]
    return {
        "sessions": n, "per_session_fps": [r.fps for r in results], "bursts_seen": len(playable),
        "playable_s_p50": _pct(playable, 50), "playable_s_p95": _pct(playable, 95),
        "screen_s_p50": _pct(screen, 50), "screen_s_p95": _pct(screen, 95),
        "underruns": sum(r.underruns for r in results), "raw": [asdict(r) for r in results],
    }


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from server import bench_report
    from server.bench import local_server, session_counts
    from server.settings import ServeError

    counts = session_counts(args.sessions)
    if args.image not in ("face", "none") and not Path(args.image).is_file():
        raise ServeError(f"--image {args.image}: no such picture file")
    if args.url:
        rows = [asyncio.run(_measure(args.url, n, args)) for n in counts]
        device = model = "remote"
    else:
        with local_server(args, max(counts)) as (url, generator):
            if "audio" not in generator.info.inputs:
                raise ServeError(f"model {generator.info.name!r} takes no audio: bench avatar needs an avatar model")
            rows = [asyncio.run(_measure(url, n, args)) for n in counts]
        device, model = generator.info.device, generator.info.name
    report = bench_report.report("avatar", device=device, model=model, seconds=args.seconds, bursts=args.bursts,
                                 format=args.format, image=args.image, results=rows)
    _print_table(report)
    bench_report.write_report(report, args.json_path)
    return 0


def _print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"framecast bench avatar — {report['model']} on {report['device']}, "
                        f"{report['seconds']:g} s of audio per session")
    for column in ("sessions", "per-session FPS", "bursts", "audio→playable s p50/p95", "audio→screen s p50/p95",
                   "underruns"):
        table.add_column(column, justify="right")
    for r in report["results"]:
        table.add_row(str(r["sessions"]), ", ".join(f"{x:.1f}" for x in r["per_session_fps"]), str(r["bursts_seen"]),
                      f"{r['playable_s_p50']}/{r['playable_s_p95']}", f"{r['screen_s_p50']}/{r['screen_s_p95']}",
                      str(r["underruns"]))
    Console().print(table)
