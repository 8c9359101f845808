"""`framecast bench stream` runs and writes its JSON (the figures themselves go to BENCHMARKS.md)."""

import json

from client.cli import main


def test_bench_stream_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "stream", "--model", "tiny", "--chunks", "3", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert len(result["chunks"]) == 3 and result["fps"] > 0
    assert set(result["mean_s"]) == {"total_s", "denoise_s", "cache_write_s", "vae_decode_s"}
    assert all(r["denoise_s"] > 0 and r["vae_decode_s"] > 0 for r in result["chunks"])


def test_bench_stream_rejects_bad_arguments(capsys):
    assert main(["bench", "stream", "--model", "tiny", "--chunks", "1"]) == 2
    assert "--chunks" in capsys.readouterr().err
