"""Chunk header packing, JPEG / fMP4 chunk encoders and the job MP4 writer (CPU, milliseconds)."""

import io
import json
import struct
import subprocess

import av
import numpy as np
import pytest
from PIL import Image

from client.protocol.chunks import pack_chunk, parse_chunk
from server.encoders import Fmp4ChunkEncoder, JpegChunkEncoder, make_encoder
from server.mp4_boxes import iter_boxes
from server.mp4_writer import Mp4FileWriter


def frames(t, h=32, w=48, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (t, h, w, 3), dtype=np.uint8)  # [T, H, W, 3]


def test_header_round_trips_through_client_parser():
    payload = JpegChunkEncoder().encode(frames(2), 5)
    msg = pack_chunk("jpeg", payload, frame_count=2, chunk_index=3, first_frame_index=5, first=False)
    parsed = parse_chunk(msg)
    assert (parsed.format, parsed.first, parsed.frame_count, parsed.chunk_index) == ("jpeg", False, 2, 3)
    assert (parsed.first_frame_index, parsed.payload) == (5, payload)
    assert len(parsed.jpeg_frames()) == 2


def test_jpeg_payload_is_length_prefixed_frames():
    data = JpegChunkEncoder(quality=90).encode(frames(3), 0)
    pos, decoded = 0, []
    while pos < len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        decoded.append(Image.open(io.BytesIO(data[pos + 4 : pos + 4 + n])))
        pos += 4 + n
    assert pos == len(data) and len(decoded) == 3
    assert all(im.size == (48, 32) for im in decoded)


def test_fmp4_chunks_form_one_decodable_stream(tmp_path):
    enc = make_encoder("fmp4", fps=16)
    assert isinstance(enc, Fmp4ChunkEncoder)
    sizes, first, parts = [1, 4, 4], 0, []
    for t in sizes:
        parts.append(enc.encode(frames(t, seed=first), first))
        first += t
    assert [b[0] for b in iter_boxes(parts[0])][:2] == [b"ftyp", b"moov"]
    assert all([b[0] for b in iter_boxes(p)] == [b"moof", b"mdat"] for p in parts[1:])
    stream = b"".join(parts)
    with av.open(io.BytesIO(stream)) as container:
        decoded = [(f.pts, f.key_frame) for f in container.decode(video=0)]
    assert len(decoded) == sum(sizes)
    pts = [p for p, _ in decoded]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)  # one continuous timeline
    assert [k for _, k in decoded] == [True, True, False, False, False, True, False, False, False]
    path = tmp_path / "s.mp4"
    path.write_bytes(stream)
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                            "stream=codec_name,width,height,nb_read_frames", "-of", "json", str(path)],
                           capture_output=True, text=True, check=True)
    assert probe.stderr == ""
    info = json.loads(probe.stdout)["streams"][0]
    assert (info["codec_name"], info["width"], info["height"], int(info["nb_read_frames"])) == ("h264", 48, 32, 9)


def test_mp4_writer_is_atomic_and_has_all_frames(tmp_path):
    path = tmp_path / "v" / "job.mp4"
    writer = Mp4FileWriter(path, width=48, height=32, fps=16)
    writer.write(frames(5))
    assert not path.exists()  # nothing under the final name until finish()
    writer.write(frames(2))
    assert writer.finish() == path and not writer.partial_path.exists()
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 7

    aborted = Mp4FileWriter(tmp_path / "a.mp4", width=48, height=32, fps=16)
    aborted.write(frames(1))
    aborted.abort()
    assert not (tmp_path / "a.mp4").exists() and not aborted.partial_path.exists()


def test_unknown_format_is_rejected():
    with pytest.raises(ValueError):
        make_encoder("gif", fps=16)
