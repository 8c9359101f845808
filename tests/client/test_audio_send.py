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
