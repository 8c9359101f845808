"""The `framecast` console script.

Each subcommand lives next to the code it drives and exposes `register(subparsers)`, which adds
its parser and sets `func` (called with the parsed args, returns an exit code). This file only
wires them together, importing each module lazily so `framecast --help` stays fast.

Errors a user can cause (bad arguments, missing files) are raised as `CLIError` and printed as
one line with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# subcommand -> module that registers it (the module's `register(subparsers)` adds the parser)
SUBCOMMANDS: dict[str, str] = {
    "generate": "models.generate_cli",
    "bench": "client.bench_cli",
    "serve": "server.cli",
    "distill": "distill.cli",
    "eval": "distill.eval_cli",
    "stream": "client.stream_cli",
    "videos": "client.videos_cli",
}


class CLIError(Exception):
    """A user-facing error: printed as `framecast: error: MESSAGE`, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framecast",
        description="Real-time streaming video generation: distill, serve, stream.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a package that is not built yet in this checkout
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        module.register(sub)
    return parser


def _triton_interpreter_without_gpu() -> None:
    """Triton kernels need a GPU, or its interpreter switched on before triton is imported."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


def main(argv: list[str] | None = None) -> int:
    _triton_interpreter_without_gpu()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = args.func(args)
    except CLIError as exc:
        print(f"framecast: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("framecast: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    # run through the package module so CLIError is the class subcommands raise
    from client.cli import main as _main

    sys.exit(_main())
