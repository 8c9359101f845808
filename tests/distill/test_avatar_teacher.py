"""`framecast eval --teacher` on avatar models: the teacher is sampled from the start image with the
face's speech (distill/avatar_teacher.py), scored like a stream, and set beside its student."""

import json

import numpy as np
import pytest

from distill.avatar_eval import eval_face
from distill.avatar_teacher import AvatarTeacherSampler, evaluate_avatar_teacher
from distill.image_eval import vae_reconstruction
from models import load_generator


@pytest.fixture(scope="module")
def shipped():
    return AvatarTeacherSampler("shapes-avatar", device="cpu", steps=16, audio_guidance=2.0)


def test_the_teacher_clip_starts_from_the_start_image_and_speaks_the_speech(shipped):
    info = load_generator("shapes-avatar", device="cpu", max_batch=1).info
    seconds = shipped.frames / info.fps
    faces = [eval_face(s, seconds, info) for s in (0, 1)]
    images = [image for image, _, _ in faces]
    spoken = shipped.sample(images, [audio for _, _, audio in faces], "a talking face", [0, 1])
    silent = shipped.sample(images, [np.zeros_like(audio) for _, _, audio in faces], "a talking face", [0, 1])
    assert spoken[0].shape == (shipped.frames, info.height, info.width, 3)
    for clip, image in zip(spoken, images):  # frame 0 is the start image's latent, decoded
        assert np.abs(clip[0].astype(int) - vae_reconstruction(shipped.vae, image).astype(int)).mean() < 1.0
    # the speech reaches the teacher: the same noise without it gives other mouths
    assert max(np.abs(a.astype(int) - b.astype(int))[1:].mean() for a, b in zip(spoken, silent)) > 1.0


@pytest.mark.slow
def test_the_shipped_teacher_lip_syncs_and_keeps_the_face(shipped):
    info = load_generator("shapes-avatar", device="cpu", max_batch=1).info
    report = evaluate_avatar_teacher(shipped, info, [0, 1, 2, 3], window_seconds=5.0)
    assert report["frames"] == 25 and len(report["runs"]) == 4
    # the width-256 teacher (v4, 2026-11-29) scored lip-sync 0.845, identity 0.609 over 8 faces; width 128: 0.82, 0.53
    assert report["mean"]["lip_sync"] > 0.45
    assert report["mean"]["identity"] > 0.35
    # its width-256 DiT returns most of the noise (0.70 / 0.93 / 0.97 at sigma 0.1 / 0.5 / 0.9; the width-128
    # teacher before it 0.37-0.48; distill/noise_capture.py)
    assert all(row["a"] > 0.6 for row in report["noise_capture"])
    untrained = AvatarTeacherSampler("shapes-avatar-untrained", device="cpu", steps=4, audio_guidance=2.0)
    low = evaluate_avatar_teacher(untrained, info, [0, 1], window_seconds=5.0)
    assert low["mean"]["lip_sync"] < 0.45 and low["mean"]["identity"] < 0.35
    assert all(abs(row["a"]) < 0.2 for row in low["noise_capture"])


def test_eval_cli_writes_the_teacher_beside_the_student(tmp_path):
    from client.cli import main

    out = tmp_path / "eval"
    assert main(["eval", "--model", "tiny-avatar", "--teacher", "tiny-avatar", "--teacher-steps", "2", "--seconds", "1",
                 "--seeds", "0,1", "--max-batch", "2", "--audio-guidance", "2", "--device", "cpu", "--out", str(out)]) == 0
    report = json.loads((out / "avatar_eval.json").read_text())
    teacher = report["teacher"]
    assert teacher["audio_guidance"] == 2.0 and teacher["steps"] == 2 and len(teacher["runs"]) == 2
    assert len(teacher["student_same_frames"]["runs"]) == 2
    assert len(teacher["mouth_by_loudness"]) == len(teacher["student_same_frames"]["mouth_by_loudness"]) == 5
    assert set(teacher["student_over_teacher"]) == {"lip_sync", "identity"}
    assert [row["sigma"] for row in teacher["noise_capture"]] == [0.1, 0.5, 0.9]
    assert report["runs"] and report["vae"]["identity"] is not None  # the student's own report is still there


def test_a_model_without_audio_has_no_avatar_teacher():
    with pytest.raises(ValueError, match="takes no audio"):
        AvatarTeacherSampler("tiny", device="cpu")
