"""Turn parsed chunk messages into uint8 RGB frames `[T, H, W, 3]`.

JPEG chunks are decoded frame by frame with Pillow. fMP4 chunks are fragments of one H.264
fragmented MP4 stream: the first chunk carries the init segment (`ftyp` + `moov`) before its
first `moof`; every later chunk is `moof` + `mdat`. Each fragment starts at a keyframe (the
server fragments on keyframes), so a fragment is decoded on its own by prefixing the init segment.
"""

from __future__ import annotations

import io
import struct

import av
import numpy as np
from PIL import Image

from client.protocol.chunks import ChunkFormatError, ChunkMessage


def decode_jpeg_frames(jpegs: list[bytes]) -> np.ndarray:
    """Decode JPEG byte strings into one uint8 array `[T, H, W, 3]`."""
    frames = []
    for i, data in enumerate(jpegs):
        try:
            with Image.open(io.BytesIO(data)) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except (OSError, ValueError) as exc:
            raise ChunkFormatError(f"JPEG frame {i} does not decode: {exc}") from exc
    if not frames:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    return np.stack(frames)


def split_init_segment(data: bytes) -> tuple[bytes, bytes]:
    """Split fMP4 bytes at the first top-level `moof` box: (init segment, fragments)."""
    offset = 0
    while offset + 8 <= len(data):
        size, box_type = struct.unpack_from(">I4s", data, offset)
        if box_type == b"moof":
            return data[:offset], data[offset:]
        if size == 1:  # 64-bit size follows the type
            if offset + 16 > len(data):
                break
            (size,) = struct.unpack_from(">Q", data, offset + 8)
        elif size == 0:  # box extends to the end
            break
        if size < 8:
            raise ChunkFormatError(f"fMP4 box {box_type!r} has impossible size {size}")
        offset += size
    return data, b""


class Fmp4Decoder:
    """Decodes the fMP4 chunks of one session, in order (keeps the init segment)."""

    def __init__(self) -> None:
        self.init_segment: bytes | None = None

    def decode(self, message: ChunkMessage) -> np.ndarray:
        """Frames of one fMP4 chunk as uint8 `[T, H, W, 3]`."""
        payload = message.payload
        if message.first or self.init_segment is None:
            init, fragment = split_init_segment(payload)
            if not init or not fragment:
                raise ChunkFormatError(f"fMP4 chunk {message.chunk_index} has no init segment before its first moof")
            self.init_segment = init
        else:
            fragment = payload
        try:
            with av.open(io.BytesIO(self.init_segment + fragment), mode="r", format="mp4") as container:
                frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        except av.FFmpegError as exc:
            raise ChunkFormatError(f"fMP4 chunk {message.chunk_index} does not decode: {exc}") from exc
        if not frames:
            raise ChunkFormatError(f"fMP4 chunk {message.chunk_index} holds no video frames")
        return np.stack(frames)


class ChunkDecoder:
    """Decodes any chunk of one session (JPEG or fMP4) to frames."""

    def __init__(self) -> None:
        self._fmp4 = Fmp4Decoder()

    def decode(self, message: ChunkMessage) -> np.ndarray:
        """Frames of one chunk as uint8 `[T, H, W, 3]`."""
        if message.format == "jpeg":
            return decode_jpeg_frames(message.jpeg_frames())
        return self._fmp4.decode(message)
