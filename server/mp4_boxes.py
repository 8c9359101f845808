"""Just enough ISO-BMFF box handling to stitch per-chunk fMP4 outputs into one stream.

Each chunk is muxed by its own short-lived PyAV container (so its fragment is complete the
moment the chunk is encoded, instead of when the next keyframe arrives). Every such output
starts at time 0 with sequence number 1; `restamp_fragment` rewrites the fragment's decode time
(`tfdt`) and sequence number (`mfhd`) so the fragments form one continuous timeline.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

CONTAINER_BOXES = {b"moov", b"trak", b"mdia", b"moof", b"traf"}  # boxes whose payload is boxes


def iter_boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """Yield (type, offset, size) of the top-level boxes in data[start:end]."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        if size == 1:  # 64-bit largesize
            size = struct.unpack_from(">Q", data, pos + 8)[0]
        elif size == 0:  # box runs to the end
            size = end - pos
        if size < 8 or pos + size > end:
            raise ValueError(f"corrupt MP4 box {kind!r} at offset {pos}")
        yield kind, pos, size
        pos += size


def find_box(data: bytes, path: list[bytes], start: int = 0, end: int | None = None) -> tuple[int, int] | None:
    """(offset, size) of the first box at `path` (e.g. [b"moov", b"trak", b"mdia", b"mdhd"])."""
    for kind, pos, size in iter_boxes(data, start, end):
        if kind != path[0]:
            continue
        if len(path) == 1:
            return pos, size
        if kind in CONTAINER_BOXES:
            found = find_box(data, path[1:], pos + 8, pos + size)
            if found:
                return found
    return None


def split_init_and_fragment(data: bytes) -> tuple[bytes, bytes]:
    """(ftyp + moov, moof + mdat ...) of one muxer output."""
    init, fragment = bytearray(), bytearray()
    for kind, pos, size in iter_boxes(data):
        (init if kind in (b"ftyp", b"moov") else fragment).extend(data[pos : pos + size])
    return bytes(init), bytes(fragment)


def track_timescales(data: bytes) -> dict[int, int]:
    """{track_ID: timescale} of every track in moov (from tkhd and mdhd)."""
    moov = find_box(data, [b"moov"])
    if moov is None:
        raise ValueError("no moov box in MP4 output")
    scales = {}
    for kind, pos, size in iter_boxes(data, moov[0] + 8, moov[0] + moov[1]):
        if kind != b"trak":
            continue
        tkhd, mdhd = find_box(data, [b"tkhd"], pos + 8, pos + size), find_box(data, [b"mdia", b"mdhd"], pos + 8, pos + size)
        track_id = struct.unpack_from(">I", data, tkhd[0] + 12 + (16 if data[tkhd[0] + 8] == 1 else 8))[0]
        scales[track_id] = struct.unpack_from(">I", data, mdhd[0] + 12 + (16 if data[mdhd[0] + 8] == 1 else 8))[0]
    return scales


def restamp_fragment(fragment: bytes, *, sequence_number: int, decode_time: int | dict[int, int]) -> bytes:
    """Copy of a moof+mdat fragment with mfhd.sequence_number and each traf's
    tfdt.baseMediaDecodeTime set: `decode_time` for every track, or {track_ID: time}."""
    out = bytearray(fragment)
    mfhd = find_box(out, [b"moof", b"mfhd"])
    moof = find_box(out, [b"moof"])
    if mfhd is None or moof is None:
        raise ValueError("fragment has no moof/mfhd box")
    struct.pack_into(">I", out, mfhd[0] + 12, sequence_number)
    trafs = [(pos, size) for kind, pos, size in iter_boxes(out, moof[0] + 8, moof[0] + moof[1]) if kind == b"traf"]
    if not trafs:
        raise ValueError("fragment has no traf box")
    for pos, size in trafs:
        tfhd, tfdt = find_box(out, [b"tfhd"], pos + 8, pos + size), find_box(out, [b"tfdt"], pos + 8, pos + size)
        if tfhd is None or tfdt is None:
            raise ValueError("traf without tfhd/tfdt")
        track_id = struct.unpack_from(">I", out, tfhd[0] + 12)[0]
        time = decode_time if isinstance(decode_time, int) else decode_time[track_id]
        if out[tfdt[0] + 8] == 1:  # version 1: 64-bit time
            struct.pack_into(">Q", out, tfdt[0] + 12, time)
        else:
            struct.pack_into(">I", out, tfdt[0] + 12, time)
    return bytes(out)
