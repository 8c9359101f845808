"""The JSON report of the server's benchmarks (`framecast bench serve|soak|extend`): one header
(what ran, when, where) and one writer, so every report names its date, command and host alike."""

from __future__ import annotations

import datetime
import json
import platform
import sys


def report(benchmark: str, **figures) -> dict:
    """{"benchmark", "date" (local, seconds), "command" (as typed), "host", then `figures` in order}."""
    return {"benchmark": benchmark, "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(["framecast"] + sys.argv[1:]), "host": platform.node(), **figures}


def write_report(report: dict, path: str | None) -> None:
    """Write `report` as indented JSON to `path` (nothing when no path was asked for)."""
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
