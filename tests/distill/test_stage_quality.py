"""`framecast eval --stages` (distill/stage_quality.py), hue drift (distill/hue_drift.py) and the contact sheet."""

import json

import numpy as np
import pytest
import torch

from client.cli import main
from distill.config import ShapesDataConfig
from distill.contact_sheet import CAPTION_HEIGHT, GAP, contact_sheet
from distill.eval_cli import EvalRun
from distill.hue_drift import hue_drift
from distill.prompts import OBJECT_COLOURS, parse_prompt
from distill.scoring import score_windows
from distill.shapes_data import ShapesDataset
from distill.stage_quality import generator_with, ground_truth_clips, reconstruct, score_clips
from models.model_dir import load_transformer, resolve_model
from models.vae import VideoVAE

PROMPT = "a large red circle bouncing quickly on a black background"


def test_ground_truth_scores_high_and_a_reconstruction_is_scored_as_decoded():
    prompts, seeds = [PROMPT, "two small yellow squares drifting slowly across gray"], [0, 1]
    clips = ground_truth_clips(prompts, seeds, 9, 64, 64, 16)
    assert len(clips) == 4 and clips[0].shape == (9, 64, 64, 3)
    assert score_clips(clips, prompts, seeds, 16)["overall"] > 0.9
    vae = VideoVAE.from_config(resolve_model("tiny").config.vae).eval()  # random weights: reconstructions are noise
    recon = reconstruct(vae, clips, batch_size=3)
    assert [r.shape for r in recon] == [c.shape for c in clips]
    assert score_clips(recon, prompts, seeds, 16)["overall"] < 0.6


def _checkpoint_of(module, path):
    torch.save({"models": {"student": module.state_dict()}, "ema": None}, path)
    return path


def test_generator_with_loads_a_trainer_checkpoint_over_the_student(tmp_path):
    other = load_transformer(resolve_model("tiny"), "teacher")  # different random weights than the student
    gen = generator_with("tiny", str(_checkpoint_of(other, tmp_path / "ckpt.pt")), device="cpu")
    for name, p in gen.transformer.state_dict().items():
        assert torch.equal(p, other.state_dict()[name]), name
    with pytest.raises(FileNotFoundError):
        generator_with("tiny", str(tmp_path / "missing.pt"), device="cpu")


@pytest.mark.slow
def test_cli_stage_table_on_the_tiny_preset(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text(PROMPT + "\n")
    student = load_transformer(resolve_model("tiny"))
    ckpt = _checkpoint_of(student, tmp_path / "ckpt.pt")  # the same weights as the student row
    out = tmp_path / "out"
    assert main(["eval", "--stages", "--model", "tiny", "--ode-init", str(ckpt), "--prompts", str(prompts),
                 "--seconds", "0.5", "--seeds", "0", "--teacher-steps", "2", "--device", "cpu", "--out", str(out)]) == 0
    report = json.loads((out / "stages.json").read_text())
    rows = report["rows"]
    assert list(rows) == ["clips", "vae", "teacher", "ode-init", "student"]
    assert rows["clips"]["overall"] > 0.9 and rows["vae"]["overall"] < 0.6
    kind = parse_prompt(PROMPT).groups[0].shape  # the row's shapes score, under the prompt's one kind
    assert rows["clips"]["shapes_by_kind"][kind] == pytest.approx(rows["clips"]["components"]["shapes"])
    assert all(v is None for k, v in rows["vae"]["shapes_by_kind"].items() if k != kind)
    assert len(rows["vae"]["streamed"]["windows"]) == 3  # 2-s windows over 6 s
    assert rows["ode-init"] == {**rows["student"], "wall_s": rows["ode-init"]["wall_s"]}
    assert "quality by stage" in capsys.readouterr().out


def _recoloured(video, src, dst):
    """`video` with every pixel of palette colour `src` painted `dst` (an object changing hue)."""
    out = video.copy()
    mask = np.abs(video.astype(int) - OBJECT_COLOURS[src]).sum(-1) < 60
    out[mask] = OBJECT_COLOURS[dst]
    return out


def test_hue_drift_flags_an_object_that_changes_colour_and_passes_one_that_keeps_it():
    video = ShapesDataset(0, ShapesDataConfig(frames=32)).sample_for_prompt(PROMPT).video  # [32, 64, 64, 3]
    drifting = np.concatenate([video[:16], _recoloured(video[16:], "red", "green")])
    runs = []
    for seed, v in enumerate((video, drifting)):
        run = EvalRun(PROMPT, seed)
        run.windows = score_windows(v, PROMPT, fps=16, window_seconds=1.0)  # two windows of 16 frames
        runs.append(run)
    drift = hue_drift(runs)
    kept = {o["seed"]: o for o in drift["objects"]}
    assert kept[0]["kept"] and kept[0]["rgb_distance"] < 5 and kept[0]["presence_last"] == 1.0
    assert not kept[1]["kept"] and kept[1]["presence_last"] == 0.0  # edge pixels may still be named red: no blob
    assert drift["kept_share"] == 0.5
    one_window = EvalRun(PROMPT, 0)
    one_window.windows = score_windows(video[:16], PROMPT, fps=16, window_seconds=1.0)
    assert hue_drift([one_window]) is None


def test_contact_sheet_places_each_prompts_frames_in_its_row():
    frames_a = np.zeros((10, 8, 8, 3), np.uint8)
    frames_a[:, :, :, 0] = np.arange(10)[:, None, None] * 20  # red rises over time
    frames_b = np.full((10, 8, 8, 3), 200, np.uint8)
    sheet = np.asarray(contact_sheet([("a", frames_a), ("b", frames_b)], columns=3, scale=2))
    cell = 16
    assert sheet.shape == (2 * (cell + CAPTION_HEIGHT + GAP) + GAP, 3 * cell + 4 * GAP, 3)
    top = GAP + CAPTION_HEIGHT
    reds = [sheet[top + 1, GAP + c * (cell + GAP) + 1, 0] for c in range(3)]
    assert reds == [0, 80, 180]  # frames 0, 4 (round(4.5) = 4) and 9
    assert (sheet[top + cell + GAP + CAPTION_HEIGHT + GAP + 1, GAP + 1] == 200).all()


def test_avatar_contact_sheet_rows_open_with_the_start_image():
    """An avatar model's rows: evaluation face i's start image, then frames of its stream, captioned
    with the speech's loudness at each column."""
    from distill.avatar_eval import eval_face
    from distill.contact_sheet import avatar_rows
    from models import load_generator

    gen = load_generator("tiny-avatar", device="cpu", max_batch=1)
    rows = avatar_rows(gen, count=2, frames=12, columns=4)
    assert len(rows) == 2
    for index, (caption, pictures) in enumerate(rows):
        assert pictures.shape == (4, gen.info.height, gen.info.width, 3)
        np.testing.assert_array_equal(pictures[0], eval_face(index, 1.0, gen.info)[0])
        assert caption.startswith(f"face {index}: image, then dB ") and len(caption.split("dB ")[1].split()) == 3
    assert not np.array_equal(rows[0][1][1:], rows[1][1][1:])  # two faces, two streams
