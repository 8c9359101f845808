"""server/media.py: clips decoded at the model's size and fps, stills of a video, the seam score."""

import numpy as np
import pytest
from PIL import Image

from client.mp4_writer import Mp4Writer
from client.protocol.errors import FramecastError as ProtocolError
from server.media import decode_clip, read_frames, seam_ratio, write_stills


def _clip(path, frames, fps):
    with Mp4Writer(path, fps=fps) as writer:
        writer.write(frames)
    return path.read_bytes()


def test_decode_clip_resamples_time_and_fits_size(tmp_path):
    levels = np.arange(10) * 25  # frame i is flat gray 25 i
    frames = np.repeat(levels.astype(np.uint8)[:, None, None, None], 3, axis=3) * np.ones((1, 80, 96, 3), np.uint8)
    raw = _clip(tmp_path / "c.mp4", frames, fps=10)  # 1 s at 10 fps, 96x80
    out = decode_clip(raw, width=64, height=64, fps=16, max_seconds=5, max_pixels=1 << 20)
    assert out.shape == (16, 64, 64, 3)  # 1 s at 16 fps
    shown = np.floor(np.arange(16) * 10 / 16).astype(int)  # the source frame on screen at k / 16 s
    np.testing.assert_allclose(out.reshape(16, -1).mean(axis=1), levels[shown], atol=3)


def test_decode_clip_rejects_what_it_cannot_use(tmp_path):
    raw = _clip(tmp_path / "c.mp4", np.zeros((16, 32, 32, 3), np.uint8), fps=16)
    with pytest.raises(ProtocolError) as err:
        decode_clip(b"\x00\x00\x00\x18ftypmp42 garbage", width=64, height=64, fps=16, max_seconds=5, max_pixels=1 << 20)
    assert err.value.code == "bad_request"
    with pytest.raises(ProtocolError) as err:
        decode_clip(raw, width=64, height=64, fps=16, max_seconds=0.5, max_pixels=1 << 20)
    assert err.value.code == "too_large"
    with pytest.raises(ProtocolError) as err:
        decode_clip(raw, width=64, height=64, fps=16, max_seconds=5, max_pixels=100)
    assert err.value.code == "too_large"


def test_stills(tmp_path):
    _clip(tmp_path / "v.mp4", np.random.default_rng(0).integers(0, 255, (20, 48, 64, 3), dtype=np.uint8), fps=16)
    write_stills(tmp_path / "v.mp4", tmp_path / "t.webp", tmp_path / "s.jpg")
    assert Image.open(tmp_path / "t.webp").format == "WEBP" and Image.open(tmp_path / "t.webp").size == (64, 48)
    sheet = Image.open(tmp_path / "s.jpg")
    assert sheet.format == "JPEG" and sheet.size == (4 * 64, 4 * 48)  # 16 tiles
    assert len(read_frames(tmp_path / "v.mp4")) == 20


def test_seam_ratio_tells_a_cut_from_a_continuation():
    x = np.linspace(0, 4 * np.pi, 64)
    moving = np.stack([np.sin(x[None, :] + 0.2 * t) * np.ones((64, 1)) for t in range(24)])  # [24, 64, 64]
    frames = np.repeat(((moving + 1) * 120).astype(np.uint8)[..., None], 3, axis=3)
    assert seam_ratio(frames, 12) < 1.5
    cut = np.concatenate([frames[:12], 255 - frames[12:]])
    assert seam_ratio(cut, 12) > 5
