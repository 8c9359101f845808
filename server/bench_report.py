"""The JSON report of the server's benchmarks (`framecast bench serve|soak|extend`): one header
(what ran, when, where) and one writer, so every report names its date, command and host alike."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys


def report(benchmark: str, **figures) -> dict:
    """{"benchmark", "date" (local, seconds), "command" (as typed), "host", "cpus", "torch_threads", then
    `figures` in order}. `torch_threads` is this process's: the in-process server's, which `--cpu-threads`
    sets and which a CPU figure depends on (with `--url`, the client's: it generates nothing)."""
    import torch

    return {"benchmark": benchmark, "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(["framecast"] + sys.argv[1:]), "host": platform.node(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), **figures}


def write_report(report: dict, path: str | None) -> None:
    """Write `report` as indented JSON to `path` (nothing when no path was asked for)."""
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
