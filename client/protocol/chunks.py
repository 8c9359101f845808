"""The binary messages of the realtime protocol: chunks (server → client) and inputs (client → server).

A chunk message is a 20-byte little-endian header, then the payload (docs/PROTOCOL.md):

    offset size field
    0      4    magic b"FCS1"
    4      1    format: 1 = JPEG frames, 2 = fMP4 fragment
    5      1    flags: bit 0 = first chunk of the session (fMP4: carries the init segment)
    6      2    frame_count
    8      4    chunk_index
    12     4    first_frame_index
    16     4    payload_length
    20     ...  JPEG: frame_count x (u32 length, JPEG bytes); fMP4: the fragment

An input message streams a per-chunk input the session declared in `session.start` (audio for
avatar models), also a 20-byte little-endian header, then the payload:

    offset size field
    0      4    magic b"FCI1"
    4      1    kind: 1 = audio (PCM, the format declared in session.start)
    5      3    reserved, zero
    8      8    media_time_us: media time of the payload's first sample, µs since the stream started
    16     4    payload_length
    20     ...  the input's bytes

Torch-free; the server packs chunks and parses inputs, the client does the reverse.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = struct.Struct("<4sBBHIII")
HEADER_FIELDS = ("magic", "format", "flags", "frame_count", "chunk_index", "first_frame_index", "payload_length")
MAGIC = b"FCS1"
FORMAT_JPEG = 1
FORMAT_FMP4 = 2
FLAG_FIRST_CHUNK = 0x01
FORMAT_NAMES = {FORMAT_JPEG: "jpeg", FORMAT_FMP4: "fmp4"}
FORMAT_CODES = {name: code for code, name in FORMAT_NAMES.items()}
FORMATS = tuple(FORMAT_CODES)  # chunk formats a session may ask for
_LENGTH = struct.Struct("<I")

INPUT_HEADER = struct.Struct("<4sB3xQI")
INPUT_HEADER_FIELDS = ("magic", "kind", "reserved", "media_time_us", "payload_length")
INPUT_MAGIC = b"FCI1"
INPUT_KINDS = {1: "audio"}  # header byte -> input kind (the name a session declares)
INPUT_CODES = {name: code for code, name in INPUT_KINDS.items()}


class ChunkFormatError(ValueError):
    """A binary message that is not a well-formed framecast chunk or input."""


@dataclass(frozen=True)
class ChunkMessage:
    """One parsed chunk message (payload still encoded)."""

    format: str  # "jpeg" or "fmp4"
    first: bool  # flags bit 0: first chunk of the session
    frame_count: int  # video frames in this chunk
    chunk_index: int  # 0, 1, 2, ... per session
    first_frame_index: int  # index of this chunk's first frame in the session's video
    payload: bytes  # JPEG: length-prefixed frames; fMP4: the fragment (+ init segment if first)

    def jpeg_frames(self) -> list[bytes]:
        """The JPEG byte strings of a JPEG chunk, one per frame."""
        if self.format != "jpeg":
            raise ChunkFormatError(f"chunk {self.chunk_index} is {self.format}, not jpeg")
        return split_jpeg_payload(self.payload, self.frame_count)


def pack_chunk(format: str, payload: bytes, *, frame_count: int, chunk_index: int, first_frame_index: int,
               first: bool = False) -> bytes:
    """Header + an already encoded payload, as one binary WebSocket message."""
    if format not in FORMAT_CODES:
        raise ValueError(f"unknown chunk format {format!r}; expected one of {sorted(FORMAT_CODES)}")
    flags = FLAG_FIRST_CHUNK if first else 0
    header = HEADER.pack(MAGIC, FORMAT_CODES[format], flags, frame_count, chunk_index, first_frame_index, len(payload))
    return header + payload


def _split(data: bytes | bytearray | memoryview, layout: struct.Struct, magic: bytes, what: str) -> tuple[tuple, bytes]:
    """(header fields after the magic, payload) of a binary message whose header ends with the
    payload length; ChunkFormatError when it is short, has another magic or a wrong length."""
    data = bytes(data)
    if len(data) < layout.size:
        raise ChunkFormatError(f"{what} message is {len(data)} bytes, shorter than the {layout.size}-byte header")
    found, *fields, payload_length = layout.unpack_from(data)
    if found != magic:
        raise ChunkFormatError(f"bad magic {found!r}, expected {magic!r}")
    payload = data[layout.size :]
    if len(payload) != payload_length:
        raise ChunkFormatError(f"payload is {len(payload)} bytes, header says {payload_length}")
    return tuple(fields), payload


def parse_chunk(data: bytes | bytearray | memoryview) -> ChunkMessage:
    """Parse one binary chunk message; raises ChunkFormatError on any inconsistency."""
    (fmt, flags, frame_count, chunk_index, first_frame_index), payload = _split(data, HEADER, MAGIC, "chunk")
    if fmt not in FORMAT_NAMES:
        raise ChunkFormatError(f"unknown chunk format {fmt}")
    message = ChunkMessage(format=FORMAT_NAMES[fmt], first=bool(flags & FLAG_FIRST_CHUNK), frame_count=frame_count,
                           chunk_index=chunk_index, first_frame_index=first_frame_index, payload=payload)
    if message.format == "jpeg":
        split_jpeg_payload(payload, frame_count)  # validate now, not at decode time
    return message


def pack_jpeg_payload(jpegs: list[bytes]) -> bytes:
    """Join per-frame JPEG bytes into a JPEG chunk payload."""
    return b"".join(_LENGTH.pack(len(j)) + j for j in jpegs)


def split_jpeg_payload(payload: bytes, frame_count: int) -> list[bytes]:
    """Split a JPEG payload (frame_count x (u32 length, bytes)) into per-frame JPEG bytes."""
    frames: list[bytes] = []
    offset = 0
    for i in range(frame_count):
        if offset + _LENGTH.size > len(payload):
            raise ChunkFormatError(f"JPEG payload ends before frame {i} of {frame_count}")
        (length,) = _LENGTH.unpack_from(payload, offset)
        offset += _LENGTH.size
        if offset + length > len(payload):
            raise ChunkFormatError(f"JPEG frame {i} claims {length} bytes, only {len(payload) - offset} left")
        frames.append(payload[offset : offset + length])
        offset += length
    if offset != len(payload):
        raise ChunkFormatError(f"{len(payload) - offset} trailing bytes after {frame_count} JPEG frames")
    return frames


@dataclass(frozen=True)
class InputMessage:
    """One parsed client → server input message."""

    kind: str  # "audio"
    media_time_us: int  # media time of the payload's first sample, µs since the stream started
    payload: bytes  # the input's bytes (audio: PCM in the declared format)


def pack_input(kind: str, payload: bytes, *, media_time_us: int) -> bytes:
    """Header + payload of one streamed input, as one binary WebSocket message."""
    if kind not in INPUT_CODES:
        raise ValueError(f"unknown input kind {kind!r}; expected one of {sorted(INPUT_CODES)}")
    return INPUT_HEADER.pack(INPUT_MAGIC, INPUT_CODES[kind], media_time_us, len(payload)) + payload


def parse_input(data: bytes | bytearray | memoryview) -> InputMessage:
    """Parse one binary input message; raises ChunkFormatError on any inconsistency."""
    (kind, media_time_us), payload = _split(data, INPUT_HEADER, INPUT_MAGIC, "input")
    if kind not in INPUT_KINDS:
        raise ChunkFormatError(f"unknown input kind {kind}")
    return InputMessage(kind=INPUT_KINDS[kind], media_time_us=media_time_us, payload=payload)
