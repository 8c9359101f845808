"""Video files in and stills out: decode a client's clip at the model's size and fps; a finished
job's thumbnail (WebP) and spritesheet (JPEG grid)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps

from client.protocol.errors import BadRequestError, FramecastError, TooLargeError

SPRITE_FRAMES = 16  # frames in a spritesheet (fewer for shorter videos)
SPRITE_TILE_WIDTH = 320  # tiles wider than this are scaled down


def _fit(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """uint8 [height, width, 3]: the frame scaled to cover width x height, centre-cropped."""
    image = frame.to_image()
    if image.size != (width, height):
        image = ImageOps.fit(image, (width, height), Image.BICUBIC)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def decode_clip(raw: bytes, *, width: int, height: int, fps: int, max_seconds: float, max_pixels: int) -> np.ndarray:
    """A video file's frames as uint8 `[T, height, width, 3]` at `fps`: output frame k shows the
    source frame on screen at time k / fps (any source rate), each scaled to cover the size and
    centre-cropped. BadRequestError (not a decodable video), TooLargeError (over the pixel
    or duration limit)."""
    frames: list[np.ndarray] = []  # output frames so far
    last: np.ndarray | None = None  # the latest source frame, fitted
    end = 0.0  # seconds covered by the source frames seen
    origin = None  # the first frame's time: output time 0
    try:
        with av.open(io.BytesIO(raw), mode="r") as container:
            if not container.streams.video:
                raise BadRequestError("field 'video': the file has no video stream")
            stream = container.streams.video[0]
            step = 1.0 / float(stream.average_rate or stream.guessed_rate or fps)  # source frame duration
            for i, frame in enumerate(container.decode(stream)):
                if frame.width * frame.height > max_pixels:
                    raise TooLargeError(f"field 'video': over the {max_pixels}-pixel limit")
                start = frame.time if frame.time is not None else i * step
                origin = start if origin is None else origin
                start -= origin
                while last is not None and len(frames) / fps < start - 1e-6:  # times the previous frame covers
                    frames.append(last)
                last = _fit(frame, width, height)
                end = max(end, start + step)
                if end > max_seconds + step:
                    raise TooLargeError(f"field 'video': longer than {max_seconds:g} s")
    except FramecastError:
        raise
    except Exception:  # PyAV raises many types for data that is not a video
        raise BadRequestError("field 'video': not a decodable video file") from None
    if last is None:
        raise BadRequestError("field 'video': the file holds no frames")
    while len(frames) / fps < end - 1e-6:
        frames.append(last)
    return np.stack(frames)  # [T, H, W, 3]


def read_frames(path: str | Path) -> np.ndarray:
    """Every frame of a video file, uint8 `[T, H, W, 3]`."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def seam_ratio(frames: np.ndarray, seam: int) -> float:
    """How visible a join is: the mean |difference| between frames seam-1 and seam of `frames`
    `[T, H, W, 3]`, over the median of the other consecutive-frame differences (about 1 when the
    join looks like any other frame step; a cut between unrelated frames scores far higher)."""
    steps = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))  # [T-1]
    return float(steps[seam - 1] / max(float(np.median(np.delete(steps, seam - 1))), 1e-6))


def write_stills(video: str | Path, thumbnail: Path, spritesheet: Path) -> None:
    """The thumbnail (the middle frame, WebP) and the spritesheet (up to SPRITE_FRAMES frames evenly
    spaced, row by row in a near-square JPEG grid) of a finished MP4, each written atomically."""
    frames = read_frames(video)  # [T, H, W, 3]
    _save(Image.fromarray(frames[len(frames) // 2]), thumbnail, "WEBP", quality=85)
    picks = np.linspace(0, len(frames) - 1, min(SPRITE_FRAMES, len(frames))).round().astype(int)
    height, width = frames.shape[1:3]
    scale = min(1.0, SPRITE_TILE_WIDTH / width)
    tile = (max(1, round(width * scale)), max(1, round(height * scale)))
    cols = math.ceil(math.sqrt(len(picks)))
    rows = math.ceil(len(picks) / cols)
    sheet = Image.new("RGB", (cols * tile[0], rows * tile[1]))
    for n, index in enumerate(picks):
        sheet.paste(Image.fromarray(frames[index]).resize(tile, Image.BICUBIC), ((n % cols) * tile[0], (n // cols) * tile[1]))
    _save(sheet, spritesheet, "JPEG", quality=85)


def _save(image: Image.Image, path: Path, fmt: str, **options) -> None:
    partial = path.with_name(path.name + ".partial")
    image.save(partial, format=fmt, **options)
    partial.replace(path)
