"""Chunk payloads -> numpy frames (JPEG, fMP4) and frames -> MP4 file."""

import io
import shutil
import struct
import subprocess

import av
import numpy as np
import pytest
from PIL import Image

from client.protocol.chunks import ChunkFormatError, ChunkMessage, pack_chunk, pack_jpeg_payload, parse_chunk
from client.frame_decode import ChunkDecoder, decode_jpeg_frames, split_init_segment
from client.mp4_writer import Mp4Writer


def moving_square_frames(count, size=32):
    """uint8 [T, H, W, 3]: a white square moving right over a blue background."""
    frames = np.zeros((count, size, size, 3), dtype=np.uint8)
    frames[..., 2] = 160
    for t in range(count):
        frames[t, 8:20, 2 + t : 14 + t] = 255
    return frames


def jpeg_bytes(frame):
    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="JPEG", quality=95)
    return out.getvalue()


def fmp4_chunks(frames, chunk_frames):
    """Encode frames as fragmented MP4 (a keyframe per chunk); return [init+frag0, frag1, ...]."""
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4",
                 options={"movflags": "frag_keyframe+empty_moov+default_base_moof"}) as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"g": str(chunk_frames), "bf": "0", "tune": "zerolatency", "preset": "ultrafast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    init, rest = split_init_segment(out.getvalue())
    fragments, offset = [], 0
    while offset < len(rest):  # group each moof with the mdat after it
        size, kind = struct.unpack_from(">I4s", rest, offset)
        if kind == b"moof":
            fragments.append(b"")
        fragments[-1] += rest[offset : offset + size]
        offset += size
    fragments[0] = init + fragments[0]
    return fragments


def test_jpeg_chunk_decodes_to_frames():
    frames = moving_square_frames(3)
    message = parse_chunk(pack_chunk("jpeg", chunk_index=0, first_frame_index=0, frame_count=3, payload=pack_jpeg_payload([jpeg_bytes(f) for f in frames])))
    decoded = ChunkDecoder().decode(message)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - frames).mean() < 4


def test_corrupt_jpeg_is_a_format_error():
    with pytest.raises(ChunkFormatError, match="frame 0"):
        decode_jpeg_frames([b"not a jpeg"])


def test_fmp4_chunks_decode_in_order():
    frames = moving_square_frames(8)
    chunks = fmp4_chunks(frames, chunk_frames=4)
    assert len(chunks) == 2
    decoder = ChunkDecoder()
    got = [decoder.decode(ChunkMessage("fmp4", i == 0, 4, i, 4 * i, payload)) for i, payload in enumerate(chunks)]
    decoded = np.concatenate(got)
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames).mean() < 8
    # the square moved: decoded frames differ from each other the way the inputs do
    assert np.abs(decoded[0].astype(int) - decoded[-1]).mean() > 5


def test_fmp4_first_chunk_without_init_segment_is_rejected():
    with pytest.raises(ChunkFormatError, match="init segment"):
        ChunkDecoder().decode(ChunkMessage("fmp4", True, 4, 0, 0, b"\x00\x00\x00\x08moov"))


def test_mp4_writer_writes_a_playable_file(tmp_path):
    path = tmp_path / "out.mp4"
    frames = moving_square_frames(10, size=33)[:, :, :33]  # odd size: padded to even
    with Mp4Writer(path, fps=12) as writer:
        writer.write(frames[:4])
        writer.write(frames[4])
        writer.write(frames[5:])
    assert writer.frames_written == 10
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert float(stream.average_rate) == pytest.approx(12)
    assert len(decoded) == 10 and decoded[0].shape == (34, 34, 3)
    if shutil.which("ffprobe"):
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", str(path)],
                               capture_output=True, text=True, check=True)
        assert probe.stdout.strip() == "h264"


def test_mp4_writer_rejects_changing_size(tmp_path):
    with Mp4Writer(tmp_path / "x.mp4", fps=10) as writer:
        writer.write(moving_square_frames(1, 16))
        with pytest.raises(ValueError, match="differs"):
            writer.write(moving_square_frames(1, 32))
