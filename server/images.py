"""Decode a client's input image (a `data:` URL or bare base64) into uint8 RGB pixels.

The budget is checked from the header before any pixel is decoded: encoded bytes, decoded pixels
and aspect ratio (a 1 x 16,000,000 PNG is 31 KB and under the pixel limit, yet takes seconds to
decode and resize). Callers run this off the event loop and off the device thread, and pass the
model's `size` so the device thread never resizes.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

import numpy as np
from PIL import Image

from client.protocol.errors import BadRequestError, FramecastError, TooLargeError
from server.settings import Settings

MAX_ASPECT = Settings.model_fields["max_image_aspect"].default  # for callers without settings at hand


def decode_image(data: str, *, max_bytes: int, max_pixels: int, max_aspect: float = MAX_ASPECT,
                 size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 [H, W, 3] from 'data:image/...;base64,...' (resized to `size` = (width, height) when
    given); BadRequestError / TooLargeError for bad or oversized input."""
    raw = data_url_bytes(data, max_bytes=max_bytes)
    return decode_image_bytes(raw, max_bytes=max_bytes, max_pixels=max_pixels, max_aspect=max_aspect, size=size)


def data_url_bytes(data: str, *, max_bytes: int) -> bytes:
    """The encoded image bytes inside a base64 data URL (or bare base64)."""
    if data.startswith("data:"):
        header, sep, data = data.partition(",")
        if not sep or ";base64" not in header:
            raise BadRequestError("field 'image': expected a base64 data URL", param="image")
    if len(data) * 3 // 4 > max_bytes + 3:
        raise TooLargeError(f"field 'image': over the {max_bytes}-byte limit", param="image")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError("field 'image': invalid base64", param="image") from None


def decode_image_bytes(raw: bytes, *, max_bytes: int, max_pixels: int, max_aspect: float = MAX_ASPECT,
                       size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 [H, W, 3] from encoded image bytes (PNG, JPEG, WebP, ...), resized to `size` =
    (width, height) when given."""
    if len(raw) > max_bytes:
        raise TooLargeError(f"field 'image': over the {max_bytes}-byte limit", param="image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            if image.width * image.height > max_pixels:
                raise TooLargeError(f"field 'image': over the {max_pixels}-pixel limit", param="image")
            if max(image.size) > max_aspect * max(min(image.size), 1):
                raise TooLargeError(f"field 'image': {image.width}x{image.height} is over the "
                                    f"{max_aspect:g}:1 aspect-ratio limit", param="image")
            rgb = image.convert("RGB")
            if size is not None and rgb.size != tuple(size):
                rgb = rgb.resize(tuple(size), Image.BICUBIC)
    except FramecastError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooLargeError(f"field 'image': over the {max_pixels}-pixel limit", param="image") from None
    except Exception:  # Pillow raises many types for corrupt data
        raise BadRequestError("field 'image': not a decodable image", param="image") from None
    return np.asarray(rgb, dtype=np.uint8)  # [H, W, 3]
