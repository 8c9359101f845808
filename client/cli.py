"""The `framecast` console script: a thin shell over the packages' subcommands.

Each subcommand lives next to the code it drives and exposes `register(subparsers)`, which adds
its parser and sets `func` (called with the parsed args, returns an exit code). This file only
wires them together, importing each module by name when the parser is built, so `framecast`
depends on every package but no package depends on it (docs/ARCHITECTURE.md).

Subcommands raise their package's own domain errors; the shell prints the known ones
(`USER_ERRORS`) as one line, `framecast: error: MESSAGE`, with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module that registers it (the module's `register(subparsers)` adds the parser)
SUBCOMMANDS: dict[str, str] = {
    "generate": "server.generate_cli",
    "import": "models.import_cli",
    "bench": "client.bench_cli",
    "serve": "server.cli",
    "distill": "distill.cli",
    "eval": "distill.eval_cli",
    "eval-compare": "distill.eval_compare",
    "stream": "client.stream_cli",
    "videos": "client.videos_cli",
    "avatar": "client.avatar_cli",
}

# (module, class): the domain errors a user can cause, one per package, printed as one line
USER_ERRORS: tuple[tuple[str, str], ...] = (
    ("kernels.errors", "KernelError"),
    ("models.errors", "ModelError"),
    ("distill.errors", "DistillError"),
    ("server.settings", "ServeError"),
    ("client.protocol.errors", "FramecastError"),
    ("client.errors", "UsageError"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framecast",
        description="Real-time streaming video generation: distill, serve, stream.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMANDS.values():
        importlib.import_module(module_name).register(sub)
    return parser


def is_user_error(exc: BaseException) -> bool:
    """Whether `exc` is one of USER_ERRORS (a module never imported cannot have raised its error)."""
    for module_name, class_name in USER_ERRORS:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(exc, getattr(module, class_name)):
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        print("framecast: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not is_user_error(exc):
            raise
        print(f"framecast: error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, whatever the message
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
