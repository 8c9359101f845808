"""The server's benchmark commands run end to end and write their JSON reports (their figures
go to docs/BENCHMARKS.md; nothing here checks a speed)."""

import json
import math
import subprocess
import sys

from client.cli import main
from tests.server_harness import REPO, clean_env

SECONDS = 0.5  # 8 frames of the tiny model (16 fps): a clip, its extension, the whole length


def test_bench_extend_writes_json(tmp_path):
    out = tmp_path / "extend.json"
    args = ["bench", "extend", "--model", "tiny", "--device", "cpu", "--seconds", str(SECONDS), "--repeats", "1"]
    assert main([*args, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["benchmark"] == "extend" and report["model"] == "tiny" and report["command"].startswith("framecast")
    (run,) = report["runs"]
    assert run["extended_frames"] == round(2 * SECONDS * 16)  # the clip plus its extension, stitched
    assert all(run[k] > 0 for k in ("clip_s", "extend_s", "whole_s"))
    assert math.isfinite(run["seam_ratio"]) and run["seam_ratio"] > 0
    assert report["extend_over_clip"] == round(run["extend_s"] / run["clip_s"], 2)


def test_bench_extend_rejects_bad_arguments(capsys):
    assert main(["bench", "extend", "--model", "tiny", "--seconds", "0"]) == 2
    assert "--seconds" in capsys.readouterr().err
