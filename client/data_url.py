"""Encode an image (path or bytes) as a `data:` URL, the form the server accepts for `image`."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError


def image_data_url(image: str | Path | bytes) -> str:
    """`data:image/...;base64,...` for an image file path, raw image bytes, or an existing data URL.

    The MIME type comes from the decoded content (not the file name); raises ValueError when the
    bytes are not an image Pillow can read, FileNotFoundError when the path does not exist.
    """
    if isinstance(image, str) and image.startswith("data:"):
        return image
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as decoded:
            mime = Image.MIME.get(decoded.format or "", "")
    except UnidentifiedImageError as exc:
        raise ValueError("not a readable image (expected PNG, JPEG, WebP, ...)") from exc
    if not mime:
        raise ValueError("image format has no known MIME type")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
