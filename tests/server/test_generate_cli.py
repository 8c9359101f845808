"""`framecast generate` writes an MP4 that ffprobe confirms; bad arguments give one clear line."""

import shutil

import pytest

from client.cli import main
from models.config import preset
from models.model_dir import random_transformer, random_vae, save_model_dir
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
