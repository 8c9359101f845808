"""The binary chunk message: parse/pack round trips and every way a message can be malformed."""

import pytest

from client.chunk_format import (
    HEADER,
    ChunkFormatError,
    pack_chunk,
    pack_jpeg_payload,
    parse_chunk,
    split_jpeg_payload,
)


def test_header_layout_matches_protocol():
    assert HEADER.size == 20
    message = pack_chunk("jpeg", chunk_index=7, first_frame_index=84, frame_count=0, payload=b"", first=True)
    assert message[:4] == b"FCS1"
    assert message[4] == 1 and message[5] == 1
    assert int.from_bytes(message[8:12], "little") == 7
    assert int.from_bytes(message[12:16], "little") == 84


def test_jpeg_round_trip():
    jpegs = [b"\xff\xd8one\xff\xd9", b"\xff\xd8second frame\xff\xd9", b""]
    message = parse_chunk(pack_chunk("jpeg", 3, 36, 3, pack_jpeg_payload(jpegs)))
    assert (message.format, message.first, message.chunk_index, message.first_frame_index) == ("jpeg", False, 3, 36)
    assert message.jpeg_frames() == jpegs


def test_fmp4_round_trip_keeps_payload():
    message = parse_chunk(pack_chunk("fmp4", 0, 0, 12, b"moof-bytes", first=True))
    assert message.format == "fmp4" and message.first and message.frame_count == 12
    assert message.payload == b"moof-bytes"
    with pytest.raises(ChunkFormatError):
        message.jpeg_frames()


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda m: m[:10], "shorter than"),
        (lambda m: b"XXXX" + m[4:], "bad magic"),
        (lambda m: m[:4] + b"\x09" + m[5:], "unknown chunk format"),
        (lambda m: m + b"extra", "header says"),
        (lambda m: m[:-1], "header says"),
    ],
)
def test_malformed_messages_are_rejected(mutate, match):
    good = pack_chunk("jpeg", 0, 0, 1, pack_jpeg_payload([b"abc"]))
    with pytest.raises(ChunkFormatError, match=match):
        parse_chunk(mutate(good))


def test_jpeg_payload_lengths_are_checked():
    payload = pack_jpeg_payload([b"abcd", b"ef"])
    with pytest.raises(ChunkFormatError, match="ends before frame 2"):
        split_jpeg_payload(payload, 3)
    with pytest.raises(ChunkFormatError, match="trailing bytes"):
        split_jpeg_payload(payload, 1)
    with pytest.raises(ChunkFormatError, match="claims"):
        split_jpeg_payload(payload[:-1], 2)
    # a header whose frame_count disagrees with its payload is refused at parse time
    with pytest.raises(ChunkFormatError):
        parse_chunk(pack_chunk("jpeg", 0, 0, 3, payload))
