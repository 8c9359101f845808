"""`framecast generate` writes an MP4 that ffprobe confirms; bad arguments give one clear line."""

import shutil

import numpy as np
import pytest
from PIL import Image

from client.cli import main
from models.config import preset
from models.model_dir import random_transformer, random_vae, save_model_dir
from server.generate_cli import _read_image
from server.media import read_frames
from tests.server_harness import ffprobe_video


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    cfg = preset("tiny")
    path = tmp_path_factory.mktemp("models") / "tiny"
    save_model_dir(path, cfg, transformer=random_transformer(cfg), vae=random_vae(cfg))
    return path


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe (Debian ffmpeg) not installed")
def test_generate_writes_mp4_with_requested_frames(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    assert main(["generate", "a red circle", "--model", str(tiny_model_dir), "--frames", "13", "-o", str(out), "--seed", "1"]) == 0
    assert ffprobe_video(out) == {"codec_name": "h264", "width": 64, "height": 64, "frames": 13}
    assert "13 frames" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/nonexistent/model"], "neither a directory nor a preset"),
        (["--frames", "0"], "--frames must be positive"),
        (["--seconds", "-1"], "--seconds must be positive"),
        (["--seconds", "inf"], "--seconds must be positive"),
        (["--seconds", "nan"], "--seconds must be positive"),
        (["--image", "/nonexistent.png"], "image not found"),
    ],
)
def test_bad_arguments_give_one_line(args, message, tmp_path, capsys):
    code = main(["generate", "x", "-o", str(tmp_path / "o.mp4"), "--model", "tiny", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unreadable_image(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["generate", "x", "--model", "tiny", "--image", str(bad), "-o", str(tmp_path / "o.mp4")]) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_empty_prompt(tmp_path, capsys):
    assert main(["generate", " \t ", "--model", "tiny", "-o", str(tmp_path / "o.mp4")]) == 2
    assert "the prompt is empty" in capsys.readouterr().err and not (tmp_path / "o.mp4").exists()


def test_seconds_and_frames_are_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "x", "--seconds", "1", "--frames", "3", "-o", str(tmp_path / "o.mp4")])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("length, frames", [(["--seconds", "0.5"], 8), ([], 80)])  # tiny: 16 fps; default 5 s
def test_length_in_seconds_becomes_frames(tiny_model_dir, tmp_path, capsys, length, frames):
    out = tmp_path / "clip.mp4"
    args = ["generate", "a red circle", "--model", str(tiny_model_dir), "-o", str(out), "--seed", "1", *length]
    assert main(args) == 0
    assert len(read_frames(out)) == frames
    assert f"wrote {out}: {frames} frames ({frames / 16:.2f} s of video at 64x64)" in capsys.readouterr().out


def test_reference_image_of_any_mode_starts_the_video(tiny_model_dir, tmp_path):
    gray = tmp_path / "gray.png"
    Image.new("L", (40, 30), 200).save(gray)
    pixels = _read_image(gray)
    assert pixels.shape == (30, 40, 3) and pixels.dtype == np.uint8 and (pixels == 200).all()
    clips = {}
    for name, image in (("plain", []), ("image", ["--image", str(gray)])):
        out = tmp_path / f"{name}.mp4"
        args = ["generate", "a ball", "--model", str(tiny_model_dir), "--frames", "8", "--seed", "3", "-o", str(out)]
        assert main([*args, *image]) == 0
        clips[name] = read_frames(out)
    assert clips["image"].shape == clips["plain"].shape == (8, 64, 64, 3)
    assert not np.array_equal(clips["image"], clips["plain"])  # same seed and prompt: the image made the difference
