"""`framecast eval`: prompt files, batched streaming + window scoring, JSON/PNG outputs, the CLI end to end."""

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from client.cli import main
from distill.config import ShapesDataConfig
from distill.errors import DistillError
from distill.eval_cli import (EvalRun, compare, evaluate, evaluate_teacher, parse_seeds, read_prompts, summarise,
                              write_plot)
from distill.scoring import COMPONENTS
from distill.shapes_data import ShapesDataset

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
    with pytest.raises(DistillError, match="not found"):
        read_prompts(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(DistillError, match="no prompts"):
        read_prompts(tmp_path / "empty.txt")
    (tmp_path / "bad.txt").write_text("a red circle\na cat on a sofa\n")
    with pytest.raises(DistillError, match="bad.txt:2"):
        read_prompts(tmp_path / "bad.txt")


def test_parse_seeds():
    assert parse_seeds("0, 1,7") == [0, 1, 7]
    with pytest.raises(DistillError):
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


class OracleSampler:
    """The teacher-sampler API backed by ground-truth clips (or uniform noise with `noise=True`)."""

    fps = 16

    def __init__(self, noise=False):
        self.data, self.noise, self.batches = ShapesDataset(0, ShapesDataConfig(frames=400)), noise, []

    def sample(self, prompts, seeds, frames):
        self.batches.append(len(prompts))
        if self.noise:
            rng = np.random.default_rng(0)
            return [rng.integers(0, 256, (frames, 64, 64, 3), dtype=np.uint8) for _ in prompts]
        return [self.data.sample_for_prompt(p, s).video[:frames] for p, s in zip(prompts, seeds)]


def test_teacher_runs_score_like_streams_and_the_ratio_can_fail():
    student = evaluate(OracleGenerator(max_batch=2), PROMPTS, [0, 1], 2.0, 1.0)
    oracle = OracleSampler()
    teacher = evaluate_teacher(oracle, PROMPTS, [0, 1], 2.0, 1.0, batch_size=4)
    assert oracle.batches == [4, 2]  # 6 clips, 4 at a time
    assert [(r.prompt, r.seed) for r in teacher] == [(r.prompt, r.seed) for r in student]
    assert all(len(r.windows) == 2 for r in teacher)
    report = {"summary": summarise(student), "generation": {"fps": 100.0}}
    same = compare(report, {"summary": summarise(teacher), "generation": {"fps": 20.0}})
    assert same["overall"] == pytest.approx(1.0, abs=0.05) and same["speed"] == pytest.approx(5.0)
    noisy = evaluate_teacher(OracleSampler(noise=True), PROMPTS, [0, 1], 2.0, 1.0, batch_size=4)
    # against a teacher that draws noise the student's ratio is far above 1, and the reverse far below
    assert compare(report, {"summary": summarise(noisy), "generation": {"fps": 1.0}})["overall"] > 2.0
    assert compare({"summary": summarise(noisy), "generation": {"fps": 1.0}}, report)["overall"] < 0.5


def test_teacher_sampler_is_seeded_and_sized():
    from distill.teacher_sampler import TeacherSampler

    sampler = TeacherSampler("tiny", device="cpu", steps=2, guidance=2.0)
    a = sampler.sample(PROMPTS[:2], [0, 1], frames=10)
    b = sampler.sample(PROMPTS[:2], [0, 1], frames=10)
    assert [clip.shape for clip in a] == [(10, sampler.cfg.stream.height, sampler.cfg.stream.width, 3)] * 2
    assert a[0].dtype == np.uint8 and np.array_equal(a[0], b[0]) and not np.array_equal(a[0], a[1])
    assert sampler.latent_frames(10) == 4 and sampler.latent_frames(1) == 1  # 1 + 4 * (F - 1) >= frames


def test_plot_falls_back_to_pillow(tmp_path, monkeypatch):
    runs = evaluate(OracleGenerator(), PROMPTS[:1], [0], 1.0, 0.5)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    noise_runs = evaluate_teacher(OracleSampler(noise=True), PROMPTS[:1], [0], 1.0, 0.5, batch_size=1)
    write_plot(tmp_path / "plot.png", runs, "oracle", teacher_runs=noise_runs)
    from PIL import Image

    image = np.asarray(Image.open(tmp_path / "plot.png").convert("RGB"))
    assert image.shape[0] > 100 and (image == (210, 40, 40)).all(-1).any()  # the mean curve is drawn
    assert (image[60:-60, 60:-60] == (0, 0, 0)).all(-1).any()  # and the teacher's, inside the frame


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
    assert "teacher" not in report


@pytest.mark.slow
def test_cli_scores_the_teacher_on_the_same_prompts_and_seeds(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text(PROMPTS[0] + "\n")
    out = tmp_path / "out"
    code = main(["eval", "--model", "tiny", "--teacher", "tiny", "--teacher-steps", "2", "--guidance", "3",
                 "--prompts", str(prompts), "--seconds", "0.5", "--seeds", "0,1", "--device", "cpu", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "eval.json").read_text())
    teacher = report["teacher"]
    assert teacher["steps"] == 2 and teacher["guidance"] == 3.0
    assert [(r["prompt"], r["seed"]) for r in teacher["runs"]] == [(PROMPTS[0], 0), (PROMPTS[0], 1)]
    assert teacher["generation"]["frames"] == 2 * 8 and teacher["generation"]["fps"] > 0
    ratio = report["student_over_teacher"]
    if teacher["summary"]["overall"] > 0:
        assert ratio["overall"] == pytest.approx(report["summary"]["overall"] / teacher["summary"]["overall"])
    else:  # random weights can score exactly 0: the ratio is then undefined, not a crash
        assert ratio["overall"] is None
    assert ratio["speed"] == pytest.approx(report["generation"]["fps"] / teacher["generation"]["fps"])
    assert [row["sigma"] for row in teacher["noise_capture"]] == [0.1, 0.5, 0.9]
    assert all(abs(row["a"]) < 0.3 for row in teacher["noise_capture"])  # random weights return almost no noise
    printed = capsys.readouterr().out
    assert "student / teacher" in printed and "noise capture" in printed
    assert main(["eval", "--model", "tiny", "--teacher", str(tmp_path / "nothing"), "--prompts", str(prompts)]) == 2
