"""Command-line options shared by every command that loads a model with `--model` (torch-free,
so building the `framecast` parser stays fast)."""

from __future__ import annotations

import argparse


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """`--lora FILE[:SCALE]` (repeatable) and `--text-device`; pass them on to `load_generator`."""
    parser.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                        help="merge a LoRA file or PEFT adapter folder (e.g. a self-forcing run's OUT/lora) into the "
                        "transformer at load (repeatable; SCALE default 1)")
    parser.add_argument("--text-device", default=None,
                        help="where the text encoder runs, e.g. cpu to keep umT5 off the GPU (default: --device)")
