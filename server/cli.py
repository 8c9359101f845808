"""`framecast serve`: every flag overrides the matching FRAMECAST_* environment variable."""

from __future__ import annotations

import argparse
import importlib.util
import logging

from pydantic import ValidationError

# flag -> Settings field (flags left unset fall back to the environment, then the defaults)
FLAGS: dict[str, tuple[str, type, str]] = {
    "--model": ("model", str, "preset name or model directory (default: shapes)"),
    "--lora": ("lora", str, "comma-separated LoRA files or PEFT adapter folders FILE[:SCALE] merged into the model at load"),
    "--text-device": ("text_device", str, "where the text encoder runs, e.g. cpu (default: --device)"),
    "--host": ("host", str, "bind address (default: 127.0.0.1)"),
    "--port": ("port", int, "port (default: 8000; 0 picks a free one)"),
    "--device": ("device", str, "cpu, cuda, cuda:1, ... (default: first GPU, else CPU)"),
    "--cpu-threads": ("cpu_threads", int, "torch threads on a CPU device (default: OMP_NUM_THREADS, else all cores but one)"),
    "--max-sessions": ("max_sessions", int, "live sessions per device (default: 4)"),
    "--max-connections": ("max_connections", int, "open sockets, HTTP and WebSocket (default: 64)"),
    "--max-connections-per-client": ("max_connections_per_client", int,
                                      "WebSockets open from one client address (default: 16)"),
    "--data-dir": ("data_dir", str, "job database and videos (default: ./data)"),
    "--api-keys": ("api_keys", str, "comma-separated API keys; enables auth"),
    "--cors-origins": ("cors_origins", str, "comma-separated allowed browser origins"),
    "--max-lead": ("max_lead_s", float, "seconds of video a live session may run ahead of its viewer (default: 1.0)"),
    "--lead-margin": ("lead_margin_s", float, "seconds a live chunk lands before its viewer needs it (default: 0.25)"),
    "--redis-url": ("redis_url", str, "shared job queue (several processes)"),
    "--log-level": ("log_level", str, "debug, info, warning (default: info)"),
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="serve the realtime WebSocket and the video job API")
    for flag, (field, kind, help_text) in FLAGS.items():
        parser.add_argument(flag, dest=field, type=kind, default=None, help=help_text)
    parser.set_defaults(func=main)


def settings_from_args(args: argparse.Namespace):
    from server.settings import ServeError, Settings

    overrides = {field: getattr(args, field) for field, _, _ in FLAGS.values() if getattr(args, field, None) is not None}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ServeError(f"invalid setting {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def main(args: argparse.Namespace) -> int:
    from server.settings import ServeError

    settings = settings_from_args(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if settings.redis_url and importlib.util.find_spec("redis") is None:
        raise ServeError("FRAMECAST_REDIS_URL is set but the redis client is missing: pip install 'framecast[redis]'")
    from server.serve import run

    try:
        run(settings)  # an unknown model raises ModelNotFoundError, a ModelError the shell reports
    except OSError as exc:  # port in use, unreadable data dir
        raise ServeError(f"cannot serve: {exc}") from None
    return 0
