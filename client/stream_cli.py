"""`framecast stream "PROMPT"`: stream live video from a server into an MP4, with a progress line.

    framecast stream "a red ball" --seconds 6 -o out.mp4 --switch "3:a blue square"

`--switch SECONDS:PROMPT` (repeatable) switches the prompt once SECONDS of video were received.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from client.errors import ConnectionLostError, UsageError
from client.http_common import API_KEY_ENV, DEFAULT_URL, URL_ENV
from client.mp4_writer import Mp4Writer
from client.protocol.chunks import FORMATS
from client.realtime import Chunk
from client.realtime_sync import RealtimeClient, RealtimeSession


@dataclass(frozen=True)
class PromptSwitch:
    """A scheduled prompt change: at `seconds` of received video, switch to `prompt`."""

    seconds: float
    prompt: str


def parse_switch(text: str) -> PromptSwitch:
    """Parse `SECONDS:PROMPT` (argparse type)."""
    seconds_text, sep, prompt = text.partition(":")
    try:
        seconds = float(seconds_text)
    except ValueError:
        seconds = -1.0
    if not sep or seconds < 0 or not prompt.strip():
        raise argparse.ArgumentTypeError(f"expected SECONDS:PROMPT (e.g. '2.5:a blue square'), got {text!r}")
    return PromptSwitch(seconds, prompt.strip())


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("stream", help="stream live video from a framecast server into an MP4")
    parser.add_argument("prompt", help="what to generate")
    parser.add_argument("--seconds", type=positive_float, default=5.0, help="seconds of video to record (default 5)")
    parser.add_argument("-o", "--output", type=Path, default=Path("stream.mp4"), help="MP4 to write (default stream.mp4)")
    parser.add_argument("--url", default=None, help=f"server URL (default ${URL_ENV} or {DEFAULT_URL})")
    parser.add_argument("--api-key", default=None, help=f"API key (default ${API_KEY_ENV})")
    parser.add_argument("--seed", type=int, default=None, help="random seed (same seed + prompt = same video)")
    parser.add_argument("--model", default=None, help="model name, when the server has several")
    parser.add_argument("--image", type=Path, default=None, help="start the stream from this picture")
    parser.add_argument("--switch", type=parse_switch, action="append", default=[], metavar="SECONDS:PROMPT",
                        help="switch to PROMPT after SECONDS of video (repeatable)")
    parser.add_argument("--transition-chunks", type=int, default=0, help="chunks to blend over on a switch (default 0)")
    parser.add_argument("--cut", action="store_true",
                        help="switches are scene cuts: the new prompt starts from an empty cache, as a fresh stream")
    parser.add_argument("--format", choices=FORMATS, default="jpeg", help="transport format (default jpeg)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Stream, write the MP4, print a summary line."""
    switches = sorted(args.switch, key=lambda s: s.seconds)
    for switch in switches:
        if switch.seconds >= args.seconds:
            raise UsageError(f"--switch at {switch.seconds:g}s is not before the end of the stream ({args.seconds:g}s)")
    if args.transition_chunks < 0:
        raise UsageError("--transition-chunks must be >= 0")
    if args.cut and args.transition_chunks:
        raise UsageError("--cut switches at once: leave out --transition-chunks")
    if args.image is not None and not args.image.is_file():
        raise UsageError(f"image not found: {args.image}")
    console = Console(stderr=True)
    try:
        client = RealtimeClient(args.url, args.api_key)
        with client.connect(args.prompt, seed=args.seed, format=args.format, image=args.image,
                            model=args.model) as session:
            frames = _record(session, args, switches, console)
    except ValueError as exc:  # a bad URL or image
        raise UsageError(str(exc)) from exc
    console.print(f"wrote {frames} frames ({frames / session.info.fps:.1f} s at {session.info.fps:g} fps) to {args.output}")
    return 0


def _record(session: RealtimeSession, args: argparse.Namespace, switches: list[PromptSwitch], console: Console) -> int:
    """Write chunks to the MP4 until `args.seconds` of video, firing scheduled switches."""
    fps = session.info.fps
    total = round(args.seconds * fps)
    pending = list(switches)
    first_chunk_s: float | None = None
    t0 = time.monotonic()
    progress = Progress(
        TextColumn("[bold]stream"),
        BarColumn(bar_width=12),
        TextColumn("{task.completed}/{task.total} fr"),
        TextColumn("{task.fields[line]}"),
        TimeElapsedColumn(),
        console=console,
        disable=args.quiet,
        transient=False,
    )
    with progress, Mp4Writer(args.output, fps) as writer:
        task = progress.add_task("stream", total=total, line="waiting for the first chunk")
        for chunk in session:
            first_chunk_s = first_chunk_s if first_chunk_s is not None else chunk.since_start_s
            writer.write(chunk.frames[: total - writer.frames_written])
            while pending and writer.frames_written >= pending[0].seconds * fps:
                session.update(pending.pop(0).prompt, args.transition_chunks, cut=args.cut)
            progress.update(task, completed=writer.frames_written,
                            line=_status_line(session, chunk, writer.frames_written, first_chunk_s, t0))
            if writer.frames_written >= total:
                break
        else:
            raise_if_short(session, writer.frames_written, total)
        return writer.frames_written


def raise_if_short(session: RealtimeSession, written: int, total: int) -> None:
    """The session ended before the requested length: say why."""
    reason = session.done_reason or "connection closed"
    raise ConnectionLostError(f"stream ended early ({reason}) after {written} of {total} frames")


def _status_line(session: RealtimeSession, chunk: Chunk, frames: int, first_chunk_s: float, t0: float) -> str:
    """FPS, first-chunk time, chunk latency and dropped chunks, for the progress line."""
    stats = session.stats or {}
    elapsed = max(time.monotonic() - t0 - first_chunk_s, 1e-6)
    receive_fps = (frames - len(chunk.frames)) / elapsed if frames > len(chunk.frames) else 0.0
    fps_text = f"{stats['generated_fps']:.1f}" if isinstance(stats.get("generated_fps"), (int, float)) else f"{receive_fps:.1f}"
    latency = stats.get("chunk_latency_ms")
    latency_text = f"{latency:.0f}ms" if isinstance(latency, (int, float)) else "-"
    return f"{fps_text} fps · first {first_chunk_s:.2f}s · latency {latency_text} · dropped {stats.get('dropped', 0)}"
