"""`framecast bench stream` (models/bench_stream.py): the stage timer, and what the JSON of a batched
run says about its chunks, checked against the real `tiny` generator and against its own rows.
(tests/models/test_bench_stream_cli.py has the single-stream smoke test.)"""

from __future__ import annotations

import itertools
import json
import statistics
import types

import pytest
import torch

from client.cli import main
from models import bench_stream
from models.bench_stream import StageTimer
from tests.server_harness import tiny_generator

CHUNKS = 12  # 11 steady chunks: two disjoint 5-chunk windows for the late/early cost


class Work:
    """Methods that take `seconds` on a hand-driven clock."""

    def __init__(self, clock: list[float]):
        self.clock = clock

    def run(self, seconds: float, scale: int = 1) -> float:
        self.clock[0] += seconds
        return seconds * scale

    def other(self, seconds: float) -> float:
        self.clock[0] += seconds
        return -seconds


def test_stage_timer_adds_up_each_stage_and_take_starts_over(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(bench_stream, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    work = Work(clock)
    timer = StageTimer(torch.device("cpu"))
    timer.wrap(work, "run", "a")
    timer.wrap(work, "other", "b")
    assert work.run(2.0) == 2.0 and work.run(3.0, scale=2) == 6.0  # arguments and results pass through
    assert work.other(0.5) == -0.5
    clock[0] += 7.0  # time outside the wrapped methods is nobody's
    assert timer.take() == {"a": 5.0, "b": 0.5}
    assert timer.take() == {}
    work.other(1.0)
    assert timer.take() == {"b": 1.0}


@pytest.fixture(scope="module")
def batched(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "stream.json"
    assert main(["bench", "stream", "--model", "tiny", "--device", "cpu", "--chunks", str(CHUNKS), "--batch", "2",
                 "--dtype", "fp32", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_batched_run_counts_every_streams_frames(batched):
    gen = tiny_generator()
    per_stream = [c.frames.shape[0] for c in itertools.islice(gen.stream("benchmark prompt 0", seed=0), CHUNKS)]
    rows = batched["chunks"]
    assert [r["chunk"] for r in rows] == list(range(CHUNKS))
    assert [r["frames"] for r in rows] == [2 * n for n in per_stream]  # two streams stepped together
    assert (batched["batch"], batched["dtype"], batched["resolution"]) == (2, "float32", "64x64")
    assert (batched["chunk_frames"], batched["steps"]) == (gen.info.chunk_frames, gen.info.steps)


def test_batched_run_summary_is_its_steady_chunks(batched):
    rows, steady = batched["chunks"], batched["chunks"][1:]  # the first chunk (a shorter one) is only latency
    fps = sum(r["frames"] for r in steady) / sum(r["total_s"] for r in steady)
    assert batched["fps"] == pytest.approx(fps, rel=1e-12)
    assert batched["fps_per_stream"] == pytest.approx(fps / 2, rel=1e-12)
    assert batched["cost_window_chunks"] == 5
    early = statistics.median(r["total_s"] for r in steady[:5])
    late = statistics.median(r["total_s"] for r in steady[-5:])
    assert batched["late_over_early_chunk_cost"] == pytest.approx(late / early, rel=1e-12)
    for key, mean in batched["mean_s"].items():
        assert mean == pytest.approx(statistics.mean(r[key] for r in steady), rel=1e-12)
    assert batched["first_chunk_s"] >= rows[0]["total_s"]  # opening the streams counts too
    for r in rows:  # the three stages are parts of the step, one after another
        stages = [r["denoise_s"], r["cache_write_s"], r["vae_decode_s"]]
        assert all(s > 0 for s in stages) and sum(stages) <= r["total_s"]


def test_bad_arguments_and_load_failures_are_one_line_errors(capsys):
    assert main(["bench", "stream", "--model", "tiny", "--batch", "0"]) == 2
    assert "--batch" in capsys.readouterr().err
    assert main(["bench", "stream", "--model", "no-such-model", "--device", "cpu", "--chunks", "2"]) == 2
    assert "no-such-model" in capsys.readouterr().err
    if not torch.cuda.is_available():  # a RuntimeError from the loader, reported as a user error
        assert main(["bench", "stream", "--model", "tiny", "--device", "cpu", "--text-device", "cuda"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("framecast: error:") and "CUDA" in err and "\n" not in err
