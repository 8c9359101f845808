"""The 20-byte little-endian header in front of every binary chunk message (see docs/PROTOCOL.md).

| offset | size | field |
| 0 | 4 | magic b"FCS1" | 4 | 1 | format (1 JPEG frames, 2 fMP4 fragment) | 5 | 1 | flags |
| 6 | 2 | frame_count | 8 | 4 | chunk_index | 12 | 4 | first_frame_index | 16 | 4 | payload_length |
"""

from __future__ import annotations

import struct

MAGIC = b"FCS1"
HEADER = struct.Struct("<4sBBHIII")  # magic, format, flags, frame_count, chunk_index, first_frame, payload_len
FORMAT_CODES = {"jpeg": 1, "fmp4": 2}  # protocol format name -> header byte
FLAG_FIRST_CHUNK = 0x01  # first chunk of the session (fMP4: carries the init segment)


def pack_chunk(
    fmt: str, payload: bytes, *, frame_count: int, chunk_index: int, first_frame_index: int, first: bool
) -> bytes:
    """Header + payload as one binary WebSocket message."""
    flags = FLAG_FIRST_CHUNK if first else 0
    header = HEADER.pack(MAGIC, FORMAT_CODES[fmt], flags, frame_count, chunk_index, first_frame_index, len(payload))
    return header + payload
