"""`framecast eval`: prompt files, batched streaming + window scoring, JSON/PNG outputs, the CLI end to end."""

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from client.cli import CLIError, main
from distill.eval_cli import EvalRun, evaluate, parse_seeds, read_prompts, summarise, write_plot
from distill.scoring import COMPONENTS
from distill.shapes_data import ShapesDataset
from models.config import ShapesDataConfig

PROMPTS = ["a red circle bouncing quickly on a black background",
           "two small yellow triangles drifting slowly across gray",
           "a large blue square and a green circle moving fast against white"]


class OracleGenerator:
    """The generator API backed by ground-truth shapes videos (chunks of 5, then 8 frames)."""

    def __init__(self, max_batch=2, fps=16):
        self.info = SimpleNamespace(name="oracle", fps=fps, max_batch=max_batch, width=64, height=64)
        self.data = ShapesDataset(0, ShapesDataConfig(frames=400))
        self.open, self.batches = {}, []

    def open_stream(self, prompt, seed=None):
        assert len(self.open) < self.info.max_batch
        stream = SimpleNamespace(id=f"{prompt}/{seed}", video=self.data.sample_for_prompt(prompt, seed).video, next=0, index=0)
        self.open[stream.id] = stream
        return stream

    def step(self, streams):
        self.batches.append(len(streams))
        chunks = []
        for s in streams:
            n = 5 if s.index == 0 else 8
            chunks.append(SimpleNamespace(index=s.index, first_frame_index=s.next, frames=s.video[s.next:s.next + n]))
            s.next, s.index = s.next + n, s.index + 1
        return chunks

    def close_stream(self, stream):
        del self.open[stream.id]


def test_read_prompts_skips_comments_and_rejects_bad_files(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# header\n\na red circle on black  # trailing comment\n  two blue squares across gray\n")
    assert read_prompts(f) == ["a red circle on black", "two blue squares across gray"]
    with pytest.raises(CLIError, match="not found"):
        read_prompts(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(CLIError, match="no prompts"):
        read_prompts(tmp_path / "empty.txt")
    (tmp_path / "bad.txt").write_text("a red circle\na cat on a sofa\n")
    with pytest.raises(CLIError, match="bad.txt:2"):
        read_prompts(tmp_path / "bad.txt")


def test_parse_seeds():
    assert parse_seeds("0, 1,7") == [0, 1, 7]
    with pytest.raises(CLIError):
        parse_seeds("zero")


def test_shipped_prompt_file_is_valid():
    prompts = read_prompts("configs/prompts/shapes_eval.txt")
    assert len(prompts) >= 12 and len(set(prompts)) == len(prompts)


def test_evaluate_batches_streams_trims_and_scores_ground_truth_high():
    gen = OracleGenerator(max_batch=2)
    seconds, window = 2.5, 1.0  # 40 frames -> windows of 16, 16, 8 frames
    runs = evaluate(gen, PROMPTS, [0, 1], seconds, window)
    assert [(r.prompt, r.seed) for r in runs] == [(p, s) for p in PROMPTS for s in (0, 1)]
    assert max(gen.batches) == 2 and not gen.open  # batched two at a time, every stream closed
    for r in runs:
        assert [(w.start_s, w.end_s) for w in r.windows] == [(0.0, 1.0), (1.0, 2.0), (2.0, 2.5)]
        assert r.mean()["overall"] >= 0.85, (r.prompt, r.mean())
    summary = summarise(runs)
    assert summary["overall"] >= 0.85 and len(summary["per_prompt"]) == 3 and len(summary["per_window"]) == 3
    assert summary["worst_over_first"] == pytest.approx(summary["worst_window_overall"] / summary["first_window_overall"])


def test_plot_falls_back_to_pillow(tmp_path, monkeypatch):
    runs = evaluate(OracleGenerator(), PROMPTS[:1], [0], 1.0, 0.5)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    write_plot(tmp_path / "plot.png", runs, "oracle")
    from PIL import Image

    image = np.asarray(Image.open(tmp_path / "plot.png").convert("RGB"))
    assert image.shape[0] > 100 and (image == (210, 40, 40)).all(-1).any()  # the mean curve is drawn


def test_cli_reports_missing_prompt_file_and_model(tmp_path, capsys):
    assert main(["eval", "--model", "tiny", "--prompts", str(tmp_path / "none.txt")]) == 2
    assert "prompt file not found" in capsys.readouterr().err
    prompts = tmp_path / "p.txt"
    prompts.write_text(PROMPTS[0] + "\n")
    assert main(["eval", "--model", str(tmp_path / "no_model"), "--prompts", str(prompts)]) == 2
    assert "neither a directory nor a preset" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_end_to_end_with_the_tiny_preset(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("# two prompts\n" + "\n".join(PROMPTS[:2]) + "\n")
    out = tmp_path / "out"
    code = main(["eval", "--model", "tiny", "--prompts", str(prompts), "--seconds", "1", "--window-seconds", "0.5",
                 "--seeds", "3", "--device", "cpu", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "eval.json").read_text())
    assert (out / "eval.png").stat().st_size > 1000
    assert report["model"] == "tiny" and report["info"]["fps"] == 16 and report["seeds"] == [3]
    assert [(r["prompt"], r["seed"]) for r in report["runs"]] == [(PROMPTS[0], 3), (PROMPTS[1], 3)]
    for run in report["runs"]:
        assert len(run["windows"]) == 2 and run["windows"][1]["end_s"] == 1.0
        for w in run["windows"]:
            assert set(w["components"]) == set(COMPONENTS) and 0.0 <= w["overall"] <= 1.0
    summary = report["summary"]
    assert summary["overall"] < 0.6  # random weights do not draw the prompt
    assert len(summary["per_window"]) == 2 and len(summary["per_prompt"]) == 2
    assert "framecast eval: tiny" in capsys.readouterr().out
