"""Avatar serving on the real audio model path (`tiny-avatar`: random weights, mel audio encoder,
audio cross-attention): a live session's audio lined up with its chunks by media time, the first
chunk waiting for its audio and later chunks never waiting, the received audio muxed into the fMP4
in sync, jobs with an uploaded audio file (official `openai` SDK), and `framecast avatar`."""

from __future__ import annotations

import asyncio
import io
import json
import time
import wave

import av
import numpy as np
import pytest
from PIL import Image

from client import audio_file
from client.protocol.chunks import pack_input, parse_chunk
from models.stream_api import Conditioning
from server.audio_track import AudioFormat, AudioTrack
from server.engine import Engine, EngineStream
from server.pacing import Pacer
from tests.server_harness import connect, next_event, sdk_client, send, start_server, tiny_avatar_generator

openai = pytest.importorskip("openai")
RATE = 48000  # what the clients here send (a browser microphone's rate); the model hears 16 kHz
TONE_START_S, TONE_END_S = 0.5, 1.0  # a loud tone in otherwise silent speech


def speech(seconds: float, rate: int = RATE) -> np.ndarray:
    """int16 mono: silence with a 300 Hz tone from TONE_START_S to TONE_END_S."""
    t = np.arange(round(seconds * rate)) / rate
    loud = (t >= TONE_START_S) & (t < TONE_END_S)
    return (np.sin(2 * np.pi * 300 * t) * 20000 * loud).astype(np.int16)


def wav_bytes(samples: np.ndarray, rate: int = RATE) -> bytes:
    return audio_file.wav_bytes(samples, rate)


def loud_span(samples: np.ndarray, rate: int, threshold: float = 0.3) -> tuple[float, float]:
    """(first, last) time in s where |sample| exceeds `threshold` of full scale."""
    loud = np.nonzero(np.abs(samples.astype(np.float32) / 32768) > threshold)[0]
    return loud[0] / rate, loud[-1] / rate


def placed_audio(data: bytes) -> tuple[np.ndarray, int]:
    """(int16 mono audio, rate) of an MP4 / concatenated fMP4, each decoded frame placed at its own
    timestamp (so a track shifted against the video shows), silence where none."""
    with av.open(io.BytesIO(data)) as container:
        rate = container.streams.audio[0].rate
        pieces = [(round(f.time * rate), f.to_ndarray()[0]) for f in container.decode(audio=0)]
    out = np.zeros(max(start + len(x) for start, x in pieces), np.float32)
    for start, x in pieces:
        out[start:start + len(x)] = x
    return (np.clip(out, -1, 1) * 32767).astype(np.int16), rate


def decode_av(data: bytes) -> tuple[int, np.ndarray, int]:
    """(video frames, int16 mono audio placed by its timestamps, audio rate) of an MP4 / concatenated fMP4."""
    with av.open(io.BytesIO(data)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    return frames, *placed_audio(data)


class Spy:
    """Records the audio pieces the real generator's `step` is fed (and nothing else changes)."""

    def __init__(self, gen):
        self.gen, self.pieces, self._step = gen, [], gen.step

    def __enter__(self):
        def step(streams, inputs=None):
            for pieces in inputs or []:
                self.pieces += [p for p in pieces if p.kind == "audio"]
            return self._step(streams, inputs)

        self.gen.step = step
        return self

    def __exit__(self, *exc):
        del self.gen.step  # back to the class's method

    def heard(self) -> np.ndarray:
        """The audio fed, placed by media time (int16 at the model's rate)."""
        rate = self.gen.info.audio_sample_rate
        end = max(p.media_time_us * rate // 1_000_000 + len(p.data) // 2 for p in self.pieces)
        out = np.zeros(end, np.int16)
        for p in self.pieces:
            start = p.media_time_us * rate // 1_000_000
            out[start:start + len(p.data) // 2] = np.frombuffer(p.data, "<i2")
        return out


@pytest.fixture(scope="module")
def gen():
    return tiny_avatar_generator()


@pytest.fixture(scope="module")
def server(gen, tmp_path_factory):
    with start_server(tmp_path_factory.mktemp("avatar"), generator=gen, max_running_jobs=1, lead_margin_s=0.25,
                      max_lead_s=1.0) as srv:
        yield srv


def test_the_model_declares_audio(gen, server):
    import httpx

    model = httpx.get(server.url + "/v1/models").json()["data"][0]
    assert model["inputs"] == ["audio"] and model["audio_sample_rate"] == gen.info.audio_sample_rate > 0
    assert model["cuts"] is False


def test_a_live_stream_waits_for_its_first_audio_and_never_for_late_audio(gen):
    """The engine's due times on a fake clock (the real model says how far each chunk reads)."""
    now = [100.0]
    engine = Engine(gen, max_sessions=1, max_running_jobs=0, lead_margin_s=0.25, max_lead_s=1.0, clock=lambda: now[0])
    delivered = []
    stream = EngineStream(live=True, on_chunk=lambda c, s, a: delivered.append((c, a)), on_error=print,
                          opened_at=now[0], pacer=Pacer(gen.info.fps, margin_s=0.25, max_lead_s=1.0),
                          audio=AudioTrack(AudioFormat(RATE), gen.info.audio_sample_rate, max_ahead_s=10))
    stream.state = gen.open(Conditioning("a face", seed=1, inputs=("audio",)))
    try:
        # the first chunk reads less than a later one (no start image: a short first chunk): it waits
        # for what a full chunk reads past its first frame, so later chunks find their audio there
        info = gen.info
        need_s = (info.chunk_video_frames + info.audio_lookahead_frames) / info.fps
        assert 0 < gen.audio_until_us(stream.state) / 1e6 < need_s
        assert engine._due_at(stream) == pytest.approx(100 + need_s + 0.25)  # no audio: at its deadline
        audio = speech(5.0)
        stream.audio.put_samples(0, audio[: round((need_s + 0.2) * RATE)])
        assert engine._due_at(stream) == pytest.approx(100 + need_s + 0.25)  # not enough yet
        stream.audio.put_samples(0, audio[: round((need_s + 0.3) * RATE)])
        assert engine._due_at(stream) <= now[0]  # its audio is here: at once
        engine._tick([stream])  # one real chunk
        chunk, chunk_audio = delivered[0]
        fps = gen.info.fps
        assert len(chunk_audio) == round(len(chunk.frames) / fps * RATE)  # the audio under its frames
        np.testing.assert_array_equal(chunk_audio, audio[: len(chunk_audio)])
        # later chunks: at the pacing due time when their audio is there, else at the latest start
        assert stream.audio.received_s < gen.audio_until_us(stream.state) / 1e6
        assert engine._due_at(stream) == pytest.approx(stream.pacer.latest_start())
        stream.audio.put_samples(0, audio)
        assert engine._due_at(stream) == pytest.approx(stream.pacer.due_at())
    finally:
        gen.close_stream(stream.state)


async def _session(server, seconds_of_audio: float, *, media_s: float, timeout_s: float = 600.0):
    """An fMP4 avatar session that sends `seconds_of_audio` of `speech` in 20 ms pieces at real time,
    then nothing, and reads until it has `media_s` of video (a loaded machine may be slower than
    real time); returns (session.started, chunks, the stream's bytes, events)."""
    async with connect(server.url.replace("http", "ws") + "/v1/realtime") as ws:
        await send(ws, {"type": "session.start", "prompt": "a face", "seed": 3, "format": "fmp4",
                        "audio": {"format": "pcm_s16le", "sample_rate": RATE, "channels": 1}})
        started = await next_event(ws, "session.started")
        audio, piece = speech(seconds_of_audio), RATE // 50
        chunks, events = [], []

        async def feed():
            began = time.monotonic()
            for i in range(0, len(audio), piece):
                await asyncio.sleep(max(0.0, began + (i + piece) / RATE - time.monotonic()))
                await ws.send(pack_input("audio", audio[i:i + piece].tobytes(), media_time_us=i * 1_000_000 // RATE))

        async def read():
            deadline = time.monotonic() + timeout_s
            while sum(c.frame_count for c in chunks) / started["fps"] < media_s:
                message = await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
                if isinstance(message, bytes):
                    chunks.append(parse_chunk(message))
                else:
                    events.append(json.loads(message))

        await asyncio.gather(feed(), read())
        await send(ws, {"type": "session.stop"})
    return started, chunks, b"".join(c.payload for c in chunks), events


def test_live_audio_reaches_the_model_and_the_fmp4_in_sync(gen, server):
    with Spy(gen) as spy:
        started, chunks, stream, events = asyncio.run(_session(server, 1.2, media_s=1.8))
    assert not [e for e in events if e["type"] == "error"]
    fps, model_rate = started["fps"], gen.info.audio_sample_rate
    # the model heard one contiguous stream at its rate, the tone where it was sent
    starts = [p.media_time_us for p in spy.pieces]
    assert starts == sorted(starts) and len(spy.pieces) >= 3  # one per chunk
    heard_on, heard_off = loud_span(spy.heard(), model_rate)
    assert heard_on == pytest.approx(TONE_START_S, abs=0.01) and heard_off == pytest.approx(TONE_END_S, abs=0.01)
    # the fMP4 plays the same audio under the frames it drove: same media times, one track each
    frames, audio, rate = decode_av(stream)
    assert frames == sum(c.frame_count for c in chunks) and rate == RATE
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    on, off = loud_span(audio, rate)
    assert on == pytest.approx(TONE_START_S, abs=1 / fps) and off == pytest.approx(TONE_END_S, abs=1 / fps)
    # audio stopped after 1.2 s: the stream went on (silence), it did not wait for more
    assert sum(c.frame_count for c in chunks) / fps > 1.2 + 0.5


def test_a_session_that_sends_no_audio_still_streams_and_bad_audio_is_refused(server):
    async def run():
        async with connect(server.url.replace("http", "ws") + "/v1/realtime") as ws:
            await send(ws, {"type": "session.start", "prompt": "a face", "format": "jpeg",
                            "audio": {"format": "pcm_s16le", "sample_rate": 16000, "channels": 2}})
            await next_event(ws, "session.started")
            await ws.send(pack_input("audio", b"\x00" * 6, media_time_us=0))  # not whole stereo samples
            error = await next_event(ws, "error")
            chunks = []
            while len(chunks) < 3:
                message = await asyncio.wait_for(ws.recv(), 120)
                if isinstance(message, bytes):
                    chunks.append(parse_chunk(message))
            return error, chunks

    error, chunks = asyncio.run(run())
    assert error["code"] == "bad_request" and "whole" in error["message"]
    assert [c.chunk_index for c in chunks] == [0, 1, 2]


def test_unsupported_audio_format_is_refused(server):
    async def run():
        async with connect(server.url.replace("http", "ws") + "/v1/realtime") as ws:
            await send(ws, {"type": "session.start", "prompt": "a face", "audio": {"format": "opus", "sample_rate": 48000}})
            return await next_event(ws, "error")

    assert asyncio.run(run())["code"] == "unsupported"


# ---- jobs -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sdk(server):
    with sdk_client(server.url) as client:
        yield client


def face_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 150, 120)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_job_with_audio_through_the_openai_sdk(gen, sdk, tmp_path):
    """`videos.create` has no audio parameter, so the SDK's own multipart POST sends the file;
    polling and downloading are the SDK's video methods."""
    seconds = 1.5
    video = sdk.post("/videos", cast_to=openai.types.Video,
                     body={"prompt": "a face speaking", "model": gen.info.name},
                     files=[("audio", ("speech.wav", wav_bytes(speech(seconds)), "audio/wav")),
                            ("input_reference", ("face.png", face_png(), "image/png"))],
                     options={"headers": {"Content-Type": "multipart/form-data"}})
    assert float(video.seconds) == pytest.approx(seconds)  # defaults to the audio's length
    video = sdk.videos.poll(video.id, poll_interval_ms=200)
    assert video.status == "completed", video.error
    path = tmp_path / "talk.mp4"
    sdk.videos.download_content(video.id).write_to_file(path)
    frames, audio, rate = decode_av(path.read_bytes())
    fps = gen.info.fps
    assert frames == round(seconds * fps) and len(audio) / rate == pytest.approx(seconds, abs=1 / fps)
    on, off = loud_span(audio, rate)
    assert on == pytest.approx(TONE_START_S, abs=1 / fps) and off == pytest.approx(TONE_END_S, abs=1 / fps)


def test_job_audio_errors(server, tmp_path):
    import httpx

    bad = httpx.post(server.url + "/v1/videos", data={"prompt": "x"}, files={"audio": ("a.wav", b"RIFF nonsense", "audio/wav")})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "audio"
    with start_server(tmp_path) as plain:  # the tiny model takes no audio
        refused = httpx.post(plain.url + "/v1/videos", data={"prompt": "x"},
                             files={"audio": ("a.wav", wav_bytes(speech(0.5)), "audio/wav")})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "unsupported"
    assert refused.json()["error"]["param"] == "audio"


def test_framecast_avatar_cli(gen, server, tmp_path):
    from client.cli import main

    (tmp_path / "face.png").write_bytes(face_png())
    (tmp_path / "speech.wav").write_bytes(wav_bytes(speech(1.0, rate=22050), rate=22050))
    out = tmp_path / "talk.mp4"
    assert main(["avatar", "--image", str(tmp_path / "face.png"), "--audio", str(tmp_path / "speech.wav"),
                 "-o", str(out), "--url", server.url]) == 0
    frames, audio, rate = decode_av(out.read_bytes())
    assert frames == gen.info.fps and len(audio) / rate == pytest.approx(1.0, abs=1 / gen.info.fps)


def test_framecast_avatar_sample_files_render(gen, server, tmp_path):
    """`python -m distill.avatar_sample DIR`: an evaluation face and its speech, which the README's command renders."""
    from client.cli import main
    from distill.avatar_eval import eval_face
    from distill.avatar_sample import main as write_sample

    assert write_sample([str(tmp_path), "--seconds", "1.5", "--index", "3"]) == 0
    face = np.asarray(Image.open(tmp_path / "face.png"))
    np.testing.assert_array_equal(face, eval_face(3, 1.5, gen.info)[0])  # [64, 64, 3]: that face's first frame
    with wave.open(str(tmp_path / "speech.wav")) as w:
        assert w.getframerate() == 16000 and w.getnframes() == 24000
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    loud = np.abs(pcm.reshape(-1, 1000)).max(axis=1) > 3000  # per 1/16 s frame
    assert loud.any() and not loud.all()  # speech with pauses, not noise or silence
    out = tmp_path / "talk.mp4"
    assert main(["avatar", "--image", str(tmp_path / "face.png"), "--audio", str(tmp_path / "speech.wav"),
                 "-o", str(out), "--url", server.url]) == 0
    frames, audio, rate = decode_av(out.read_bytes())
    assert frames == round(1.5 * gen.info.fps) and len(audio) / rate == pytest.approx(1.5, abs=1 / gen.info.fps)


def test_python_client_streams_a_wav_and_records_it_with_its_audio(gen, server, tmp_path):
    from client.realtime import AsyncRealtimeClient

    wav = tmp_path / "speech.wav"
    wav.write_bytes(wav_bytes(speech(2.0, rate=22050), rate=22050))  # resampled by the client to 16 kHz
    out = tmp_path / "talk.mp4"

    async def run():
        async with AsyncRealtimeClient(server.url).connect("a face", seed=2, audio_rate=16000) as session:
            feeding = asyncio.create_task(session.stream_audio(wav))  # paced to real time
            frames = await session.save_mp4(out, seconds=2.0, audio=True)
            return frames, await feeding

    with Spy(gen) as spy:
        frames, sent_s = asyncio.run(run())
    assert sent_s == pytest.approx(2.0, abs=0.02) and frames == 2 * gen.info.fps
    on, off = loud_span(spy.heard(), gen.info.audio_sample_rate)
    assert on == pytest.approx(TONE_START_S, abs=0.01) and off == pytest.approx(TONE_END_S, abs=0.01)
    n, audio, rate = decode_av(out.read_bytes())
    assert n == frames and rate == 16000
    on, off = loud_span(audio, rate)
    assert on == pytest.approx(TONE_START_S, abs=1 / gen.info.fps) and off == pytest.approx(TONE_END_S, abs=1 / gen.info.fps)


def test_bench_avatar_reports_audio_to_screen_latency(tmp_path):
    """`framecast bench avatar` end to end on tiny-avatar (the figures themselves are for BENCHMARKS.md)."""
    from client.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "avatar", "--model", "tiny-avatar", "--device", "cpu", "--seconds", "4", "--bursts", "2",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    row = report["results"][0]
    assert report["benchmark"] == "avatar" and report["model"] == "tiny-avatar" and row["bursts_seen"] == 2
    # a burst can only be playable after it was sent, and on screen no earlier than playable
    assert 0 < row["playable_s_p50"] <= row["playable_s_p95"] and row["screen_s_p50"] >= row["playable_s_p50"]
