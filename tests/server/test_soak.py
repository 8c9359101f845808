"""`framecast bench soak` (server/soak.py): a real `framecast serve` child under careless and hostile
clients for a few seconds, sampled and reported as JSON; its arguments and its RSS slope."""

import json

import pytest

from client.cli import main
from server import soak


def test_a_short_soak_runs_every_kind_of_client_and_reports_no_unexpected_error(tmp_path, capsys):
    out = tmp_path / "soak.json"
    assert main(["bench", "soak", "--model", "tiny", "--device", "cpu", "--sessions", "2", "--minutes", "0.25",
                 "--interval", "5", "--chunks", "1", "--seed", "3", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["benchmark"] == "soak" and report["sessions"] == 2
    assert report["unexpected_count"] == 0, report["unexpected"]
    assert sum(report["sessions_by_scenario"].values()) >= 4
    assert set(report["errors_by_code"]) <= soak.EXPECTED_ERRORS | set(soak.TYPED_REFUSALS)
    if report["sessions_by_scenario"]["bad_inputs"]:  # each bad-input session provokes typed errors first
        assert sum(report["errors_by_code"].get(code, 0) for code in soak.EXPECTED_ERRORS) >= 5
    samples = report["samples"]
    assert len(samples) >= 3 and samples[-1]["sessions_done"] == sum(report["sessions_by_scenario"].values())
    assert all(s["rss_mb"] > 0 and s["open_fds"] > 0 and s["threads"] > 0 for s in samples)
    assert "framecast bench soak" in capsys.readouterr().out


def test_rss_slope_is_fitted_after_the_warm_up_third():
    warm_up = [{"t_s": 0.0, "rss_mb": 100.0}, {"t_s": 60.0, "rss_mb": 400.0}]  # allocator and caches: ignored
    flat_then_rising = [{"t_s": 60.0 * (i + 2), "rss_mb": 400.0 + 3.0 * i} for i in range(4)]
    assert soak._rss_slope_mb_per_min(warm_up + flat_then_rising) == pytest.approx(3.0)
    assert soak._rss_slope_mb_per_min(warm_up[:1]) is None


@pytest.mark.parametrize("args, message", [
    (["--minutes", "0"], "--minutes"),
    (["--sessions", "0"], "--sessions"),
    (["--url", "http://127.0.0.1:9"], "--pid"),
])
def test_bad_arguments_are_refused_before_a_server_starts(args, message, capsys):
    assert main(["bench", "soak", *args]) != 0
    assert message in capsys.readouterr().err
