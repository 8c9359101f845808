"""The benchmarks' JSON report (server/bench_report.py): one header (what ran, when, where) ahead of the
figures, and one writer (indented JSON ending in a newline; nothing without a path)."""

import datetime
import json
import platform
import sys

from server import bench_report


def test_report_header_comes_first_then_the_figures_in_order(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/usr/bin/framecast-entry", "bench", "extend", "--seconds", "0.5"])
    before = datetime.datetime.now().replace(microsecond=0)
    report = bench_report.report("extend", zeta=1, alpha=[2.5], median={"clip_s": 0.1})
    after = datetime.datetime.now()
    assert list(report) == ["benchmark", "date", "command", "host", "cpus", "torch_threads", "zeta", "alpha", "median"]
    assert report["benchmark"] == "extend" and report["host"] == platform.node()
    assert report["command"] == "framecast bench extend --seconds 0.5"  # as typed, whatever the entry point
    date = datetime.datetime.fromisoformat(report["date"])
    assert date.microsecond == 0 and "." not in report["date"] and before <= date <= after  # local time, seconds
    assert (report["zeta"], report["alpha"], report["median"]) == (1, [2.5], {"clip_s": 0.1})


def test_report_names_the_cores_and_the_torch_threads_a_cpu_figure_ran_on():
    import os

    import torch

    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert bench_report.report("serve")["torch_threads"] == 1
        torch.set_num_threads(2)
        report = bench_report.report("serve")
        assert report["torch_threads"] == 2 and report["cpus"] == os.cpu_count()
    finally:
        torch.set_num_threads(old)


def test_write_report_is_indented_json_with_a_final_newline(tmp_path):
    report = {"benchmark": "extend", "runs": [{"clip_s": 1.25}], "median": {"clip_s": 1.25}}
    path = tmp_path / "out.json"
    bench_report.write_report(report, str(path))
    text = path.read_text()
    assert json.loads(text) == report
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert text == json.dumps(report, indent=2) + "\n"


def test_write_report_without_a_path_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bench_report.write_report({"benchmark": "x"}, None)
    bench_report.write_report({"benchmark": "x"}, "")
    assert list(tmp_path.iterdir()) == []
