"""The realtime client's audio sending (`send_audio`, `stream_audio`) against a recording socket:
what goes on the wire (FCI1 input messages placed by media time) and the seconds it reports."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from client.protocol.chunks import parse_input
from client.realtime import AsyncRealtimeSession, SessionInfo

RATE = 16000


class RecordingSocket:
    def __init__(self):
        self.sent: list[bytes] = []

    async def send(self, message) -> None:
        self.sent.append(message)


def session() -> tuple[AsyncRealtimeSession, RecordingSocket]:
    ws = RecordingSocket()
    info = SessionInfo(session_id="s", model="m", width=32, height=32, fps=16, chunk_frames=3, format="jpeg")
    s = AsyncRealtimeSession(ws, info, started_at=0.0)
    s.audio_rate = RATE
    return s, ws


def pieces(n: int, samples: int) -> list[np.ndarray]:
    return [np.arange(i * samples, (i + 1) * samples, dtype=np.int16) for i in range(n)]


def sync_source(kind: str, arrays: list[np.ndarray]):
    if kind == "bytes":
        return iter([a.astype("<i2").tobytes() for a in arrays])
    if kind == "bytearray":
        return iter([bytearray(a.astype("<i2").tobytes()) for a in arrays])
    return iter(arrays)


async def async_source(arrays: list[np.ndarray]):
    for a in arrays:
        yield a.astype("<i2").tobytes()


@pytest.mark.parametrize("kind", ["arrays", "bytes", "bytearray", "async bytes"])
def test_stream_audio_from_a_live_source_counts_samples(kind):
    """Byte pieces are s16le: 320 bytes are 160 samples (10 ms), whatever container holds them."""
    s, ws = session()
    arrays = pieces(5, 160)
    source = async_source(arrays) if kind == "async bytes" else sync_source(kind, arrays)
    seconds = asyncio.run(s.stream_audio(source, start_s=1.0))
    assert seconds == pytest.approx(5 * 160 / RATE)  # 0.05 s, not 0.1
    sent = [parse_input(m) for m in ws.sent]
    assert [m.media_time_us for m in sent] == [1_000_000 + i * 10_000 for i in range(5)]  # back to back from start_s
    np.testing.assert_array_equal(np.frombuffer(b"".join(m.payload for m in sent), "<i2"), np.concatenate(arrays))
    np.testing.assert_array_equal(s.audio_sent()[RATE:], np.concatenate(arrays))  # placed at 1 s


def test_stream_audio_of_an_array_counts_samples():
    s, _ = session()
    assert asyncio.run(s.stream_audio(np.zeros(RATE // 2, np.int16), realtime=False)) == pytest.approx(0.5)


class ChunkSocket(RecordingSocket):
    """Hands out prepared binary messages, then closes normally (as after session.stop)."""

    def __init__(self, messages: list[bytes]):
        super().__init__()
        self.messages = list(messages)

    async def recv(self):
        if not self.messages:
            from websockets.exceptions import ConnectionClosedOK
            from websockets.frames import Close

            raise ConnectionClosedOK(Close(1000, ""), Close(1000, ""), True)
        return self.messages.pop(0)

    async def close(self):
        pass


def jpeg_chunk(index: int, first_frame: int, shades: list[int]) -> bytes:
    import io
    import struct

    from PIL import Image

    from client.protocol.chunks import pack_chunk

    payload = b""
    for shade in shades:
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (shade, shade, shade)).save(buf, format="JPEG", quality=95)
        payload += struct.pack("<I", buf.tell()) + buf.getvalue()
    return pack_chunk("jpeg", payload, frame_count=len(shades), chunk_index=index, first_frame_index=first_frame,
                      first=index == 0)


def test_a_recording_with_audio_holds_the_last_frame_over_skipped_media_time(tmp_path):
    """An avatar session resumed after a pause skips media time (first_frame_index jumps): a recording
    with audio holds the last frame over the gap, so every later frame stays under its audio."""
    import av

    ws = ChunkSocket([jpeg_chunk(0, 0, [40] * 4), jpeg_chunk(1, 10, [200] * 4)])
    info = SessionInfo(session_id="s", model="m", width=32, height=32, fps=16, chunk_frames=3, format="jpeg")
    s = AsyncRealtimeSession(ws, info, started_at=0.0)
    s.audio_rate = RATE
    s._stop_sent = True  # the socket ends with a normal close
    path = tmp_path / "rec.mp4"
    written = asyncio.run(s.save_mp4(path, audio=np.zeros(RATE, np.int16), stop=False))
    assert written == 14
    with av.open(str(path)) as container:
        shades = [int(f.to_ndarray(format="rgb24").mean()) for f in container.decode(video=0)]
    assert [round(x / 10) for x in shades] == [4] * 10 + [20] * 4  # frames 4..9: the last frame held
