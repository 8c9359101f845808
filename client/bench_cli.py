"""`framecast bench KIND`: benchmarks that print a table and write JSON (never timed unit tests).

Each kind lives next to what it measures and exposes `add_arguments(parser)` and `run(args)`.
"""

from __future__ import annotations

import argparse
import importlib

# bench kind -> (module, one-line help)
BENCHES: dict[str, tuple[str, str]] = {
    "stream": ("models.bench_stream", "per-chunk transformer / VAE time, first-chunk latency, FPS, memory"),
    "attention": ("kernels.bench", "attention backends and sparse patterns at Wan shapes"),
    "serve": ("server.bench", "aggregate and per-session FPS and latency for N concurrent sessions"),
    "soak": ("server.soak", "RSS, fds, threads and chunk gaps over time under careless and hostile clients"),
    "extend": ("server.bench_extend", "a job extended by N s against rendering the clip and the whole from scratch"),
    "hostile": ("server.bench_hostile", "memory after N closed/aborted sessions, a ping flood, image attackers"),
    "avatar": ("server.bench_avatar", "live avatar sessions: audio burst sent -> its frame playable / on screen, FPS"),
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="run a benchmark (prints a table, writes JSON)")
    kinds = parser.add_subparsers(dest="bench_kind", metavar="KIND")
    for kind, (module_name, help_text) in BENCHES.items():
        p = kinds.add_parser(kind, help=help_text)
        p.set_defaults(func=_runner(module_name))
        importlib.import_module(module_name).add_arguments(p)


def _runner(module_name: str):
    def run(args: argparse.Namespace) -> int:
        return importlib.import_module(module_name).run(args)

    return run
