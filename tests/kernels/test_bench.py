"""`framecast bench attention --small` end to end on a trimmed CPU shape set (a smoke test, not a timing)."""

import argparse
import json

from kernels import bench


def test_small_bench_writes_every_section(tmp_path):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "attention.json"
    args = parser.parse_args(["--small", "--device", "cpu", "--frames", "6", "--batch", "1", "--fractions", "1,0.5",
                              "--backends", "sdpa,triton", "--json", str(out)])
    assert bench.run(args) == 0
    report = json.loads(out.read_text())
    dense = {r["backend"]: r for r in report["dense"]}
    assert set(dense) == {"sdpa", "triton"}
    for row in dense.values():
        assert row["ms"] > 0 and row["rel_error"] < 1e-4
        assert row["q_len"] == 48 and row["kv_len"] == 96
    sparse = report["sparse"]
    assert [r["fraction"] for r in sparse] == [1.0, 0.5]
    assert sparse[1]["kept_fraction"] < 1.0 and sparse[0]["vs_dense"] == 1.0
    assert report["roll"]["same_storage"] is True
    assert "framecast bench attention" in report["command"]
