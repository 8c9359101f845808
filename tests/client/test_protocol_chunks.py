"""The binary messages (chunks out, inputs in): pack/parse round trips and every way one can be malformed."""

import pytest

from client.protocol.chunks import (
    HEADER, INPUT_HEADER, ChunkFormatError, pack_chunk, pack_input, pack_jpeg_payload, parse_chunk, parse_input,
    split_jpeg_payload,
)


def test_header_layout_matches_protocol():
    assert HEADER.size == 20
    message = pack_chunk("jpeg", b"", chunk_index=7, first_frame_index=84, frame_count=0, first=True)
    assert message[:4] == b"FCS1"
    assert message[4] == 1 and message[5] == 1
    assert int.from_bytes(message[8:12], "little") == 7
    assert int.from_bytes(message[12:16], "little") == 84


def test_jpeg_round_trip():
    jpegs = [b"\xff\xd8one\xff\xd9", b"\xff\xd8second frame\xff\xd9", b""]
    message = parse_chunk(pack_chunk("jpeg", chunk_index=3, first_frame_index=36, frame_count=3, payload=pack_jpeg_payload(jpegs)))
    assert (message.format, message.first, message.chunk_index, message.first_frame_index) == ("jpeg", False, 3, 36)
    assert message.jpeg_frames() == jpegs


def test_fmp4_round_trip_keeps_payload():
    message = parse_chunk(pack_chunk("fmp4", chunk_index=0, first_frame_index=0, frame_count=12, payload=b"moof-bytes", first=True))
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
    good = pack_chunk("jpeg", chunk_index=0, first_frame_index=0, frame_count=1, payload=pack_jpeg_payload([b"abc"]))
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
        parse_chunk(pack_chunk("jpeg", chunk_index=0, first_frame_index=0, frame_count=3, payload=payload))


def test_input_message_round_trip_and_layout():
    message = pack_input("audio", b"\x01\x02" * 8, media_time_us=1_500_000)
    assert INPUT_HEADER.size == 20 and message[:4] == b"FCI1" and message[4] == 1 and message[5:8] == b"\0\0\0"
    assert int.from_bytes(message[8:16], "little") == 1_500_000
    assert int.from_bytes(message[16:20], "little") == 16
    parsed = parse_input(message)
    assert (parsed.kind, parsed.media_time_us, parsed.payload) == ("audio", 1_500_000, b"\x01\x02" * 8)
    with pytest.raises(ValueError, match="unknown input kind"):
        pack_input("smell", b"", media_time_us=0)


@pytest.mark.parametrize("mutate, match", [
    (lambda m: m[:12], "shorter than"),
    (lambda m: b"FCS1" + m[4:], "bad magic"),  # a chunk's magic is not an input's
    (lambda m: m[:4] + b"\x07" + m[5:], "unknown input kind"),
    (lambda m: m[:-1], "header says"),
])
def test_malformed_inputs_are_rejected(mutate, match):
    with pytest.raises(ChunkFormatError, match=match):
        parse_input(mutate(pack_input("audio", b"abcd", media_time_us=0)))
