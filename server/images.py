"""Decode a client's input image (a `data:` URL or bare base64) into uint8 RGB pixels."""

from __future__ import annotations

import base64
import binascii
import io
import warnings

import numpy as np
from PIL import Image

from server.errors import ProtocolError


def decode_image(data: str, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """uint8 [H, W, 3] from 'data:image/...;base64,...'; ProtocolError for bad or oversized input."""
    raw = data_url_bytes(data, max_bytes=max_bytes)
    return decode_image_bytes(raw, max_bytes=max_bytes, max_pixels=max_pixels)


def data_url_bytes(data: str, *, max_bytes: int) -> bytes:
    """The encoded image bytes inside a base64 data URL (or bare base64)."""
    if data.startswith("data:"):
        header, sep, data = data.partition(",")
        if not sep or ";base64" not in header:
            raise ProtocolError("bad_request", "field 'image': expected a base64 data URL")
    if len(data) * 3 // 4 > max_bytes + 3:
        raise ProtocolError("too_large", f"field 'image': over the {max_bytes}-byte limit")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("bad_request", "field 'image': invalid base64") from None


def decode_image_bytes(raw: bytes, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """uint8 [H, W, 3] from encoded image bytes (PNG, JPEG, WebP, ...)."""
    if len(raw) > max_bytes:
        raise ProtocolError("too_large", f"field 'image': over the {max_bytes}-byte limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            if image.width * image.height > max_pixels:
                raise ProtocolError("too_large", f"field 'image': over the {max_pixels}-pixel limit")
            rgb = image.convert("RGB")
    except ProtocolError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ProtocolError("too_large", f"field 'image': over the {max_pixels}-pixel limit") from None
    except Exception:  # Pillow raises many types for corrupt data
        raise ProtocolError("bad_request", "field 'image': not a decodable image") from None
    return np.asarray(rgb, dtype=np.uint8)  # [H, W, 3]
