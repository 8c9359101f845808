"""Realtime streaming clients for `WS /v1/realtime` (async; the blocking wrapper is client/realtime_sync.py).

    async with AsyncRealtimeClient("http://127.0.0.1:8000").connect("a red ball") as session:
        async for chunk in session:          # Chunk: .index, .frames [T, H, W, 3] uint8, timings
            if chunk.index == 4:
                await session.update("a blue square", transition_chunks=2)
            if chunk.index == 10:
                break

    with RealtimeClient().connect("a red ball", seed=1) as session:
        session.save_mp4("out.mp4", seconds=3)

Avatar models take streamed audio: declare its rate in `connect(..., audio_rate=16000)`, then
send PCM as it is captured (`send_audio`), or a whole file / array / live source paced to real
time in the background (`stream_audio`); chunks come back with the face speaking it:

    async with AsyncRealtimeClient().connect("a face", image="face.png", audio_rate=16000) as session:
        feeder = asyncio.create_task(session.stream_audio("speech.wav"))
        await session.save_mp4("talk.mp4", seconds=5, audio=True)  # with the audio sent, in sync

With an API key the client first mints a short-lived client token with
`POST /v1/realtime/sessions` and passes it as `?token=`. permessage-deflate is disabled: video
chunks are already compressed and deflate makes the socket ~20x slower.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import numpy as np
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from client.audio_file import load_audio, pcm_pieces
from client.data_url import image_data_url
from client.frame_decode import ChunkDecoder
from client.http_common import (
    auth_headers,
    json_body,
    resolve_api_key,
    resolve_base_url,
    token_from_session_response,
    websocket_url,
)
from client.mp4_writer import Mp4Writer
from client.protocol.chunks import FORMATS, ChunkFormatError, pack_input, parse_chunk
from client.protocol.errors import (
    ConnectionLostError, FramecastError, ProtocolError, error_from_close, error_from_code, error_from_http,
)
from client.protocol.events import (
    AudioInput, SessionPause, SessionPing, SessionResume, SessionStart, SessionStop, SessionUpdate, parse_server_event,
)

REALTIME_PATH = "/v1/realtime"
TOKEN_PATH = "/v1/realtime/sessions"


@dataclass(frozen=True)
class SessionInfo:
    """The server's `session.started` event."""

    session_id: str
    model: str
    width: int
    height: int
    fps: float  # frames per second of the generated video
    chunk_frames: int  # video frames per chunk
    format: str  # "jpeg" or "fmp4"
    raw: dict = field(repr=False, default_factory=dict)  # the whole event

    @classmethod
    def from_event(cls, event: dict) -> "SessionInfo":
        try:
            return cls(
                session_id=str(event["session_id"]),
                model=str(event.get("model", "")),
                width=int(event["width"]),
                height=int(event["height"]),
                fps=float(event["fps"]),
                chunk_frames=int(event.get("chunk_frames", 0)),
                format=str(event.get("format", "jpeg")),
                raw=event,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed session.started event: {event}") from exc


@dataclass(frozen=True)
class Chunk:
    """One decoded chunk of the stream."""

    index: int  # chunk_index from the server (0, 1, 2, ...)
    first_frame_index: int  # index of frames[0] in the session's video
    frames: np.ndarray = field(repr=False)  # uint8 [T, H, W, 3] RGB
    format: str  # "jpeg" or "fmp4": how it travelled
    nbytes: int  # size of the binary message
    received_at: float  # wall-clock time.time() when the message arrived
    since_start_s: float  # seconds from sending session.start to this chunk's arrival
    interval_s: float  # seconds since the previous chunk arrived (since_start_s for the first)


class AsyncRealtimeSession:
    """A live realtime session. Iterate it for chunks; JSON events update its attributes.

    Attributes kept up to date while iterating:
      info          SessionInfo from `session.started`
      stats         the latest `stats` event (generated_fps, sent, dropped, queue_depth, chunk_latency_ms)
      applied       event_id -> chunk_index of every `session.update.applied`
      errors        FramecastError for every non-fatal `error` event
      events        the last 1000 JSON events, as dicts
      done_reason   `session.done` reason once the session ended
      on_event      optional callback called with every JSON event dict
    """

    def __init__(self, ws: Any, info: SessionInfo, started_at: float, on_event: Callable[[dict], None] | None = None):
        self.ws = ws
        self.info = info
        self.stats: dict | None = None
        self.applied: dict[str, int] = {}
        self.errors: list[FramecastError] = []
        self.events: deque[dict] = deque(maxlen=1000)
        self.done_reason: str | None = None
        self.on_event = on_event
        self.last_pong_at: float | None = None
        self.chunks_received = 0
        self.frames_received = 0
        self._started_at = started_at
        self._last_chunk_at = started_at
        self._decoder = ChunkDecoder()
        self._stop_sent = False
        self.audio_rate: int | None = None  # declared in session.start (set by connect)
        self._audio_next_us = 0  # media time right after the last audio sent
        self._audio_log: list[tuple[int, np.ndarray]] = []  # (media time µs, int16 samples) sent, for saving

    # ---- control messages -------------------------------------------------------------------

    async def _send(self, message: dict) -> None:
        try:
            await self.ws.send(json.dumps(message))
        except ConnectionClosed as exc:
            raise self._closed_error(exc) from exc

    async def update(self, prompt: str, transition_chunks: int = 0, event_id: str | None = None,
                     cut: bool = False) -> str:
        """Switch to `prompt` from the next chunk boundary; returns the event_id to watch in `applied`.
        `cut`: a scene cut (a new video of the new prompt: an empty cache and a restarted decoder, as a fresh stream)."""
        event_id = event_id or f"upd_{uuid.uuid4().hex[:12]}"
        await self._send(SessionUpdate.unchecked(prompt=prompt, transition_chunks=int(transition_chunks),
                                                 cut=bool(cut), event_id=event_id))
        return event_id

    async def send_audio(self, pcm: bytes | np.ndarray, media_time_s: float | None = None) -> int:
        """Send one piece of audio (int16 mono samples, or s16le bytes, at the declared rate) whose
        first sample is at `media_time_s` (default: right after the previous piece); returns the
        number of samples sent."""
        if self.audio_rate is None:
            raise ValueError("this session declared no audio: connect with audio_rate=...")
        if isinstance(pcm, (bytes, bytearray, memoryview)):
            samples = np.frombuffer(pcm, "<i2")  # [N] s16le
        else:
            samples = np.asarray(pcm, np.int16).reshape(-1)  # [N]
        start_us = self._audio_next_us if media_time_s is None else round(media_time_s * 1e6)
        try:
            await self.ws.send(pack_input("audio", samples.astype("<i2").tobytes(), media_time_us=start_us))
        except ConnectionClosed as exc:
            raise self._closed_error(exc) from exc
        self._audio_log.append((start_us, samples))
        self._audio_next_us = start_us + len(samples) * 1_000_000 // self.audio_rate
        return len(samples)

    async def stream_audio(self, source: Any, *, realtime: bool = True, piece_s: float = 0.02,
                           start_s: float = 0.0) -> float:
        """Send audio from media time `start_s` on: `source` is an audio file (path or bytes, any
        format, resampled to the declared rate), an int16 array, or a live source (an iterable or
        async iterable of int16 arrays or s16le byte pieces, sent as they come). Files and arrays go
        out in `piece_s` pieces paced to real time (as a microphone would send them) unless
        `realtime=False`.
        Returns the seconds of audio sent. Run it as a task beside reading chunks."""
        if self.audio_rate is None:
            raise ValueError("this session declared no audio: connect with audio_rate=...")
        rate, sent = self.audio_rate, 0
        if isinstance(source, (str, Path, bytes)):
            source = load_audio(source, rate=rate)[0]
        if isinstance(source, np.ndarray):
            began = time.monotonic()
            for start_us, pcm in pcm_pieces(source, rate, piece_s):
                if realtime:  # a piece is sent once it would have been captured
                    await asyncio.sleep(max(0.0, began + (start_us + len(pcm) * 500_000 // rate) / 1e6 - time.monotonic()))
                sent += await self.send_audio(pcm, start_s + start_us / 1e6)
            return sent / rate
        self._audio_next_us = round(start_s * 1e6)
        if hasattr(source, "__aiter__"):
            async for piece in source:
                sent += await self.send_audio(piece)
        else:
            for piece in source:
                sent += await self.send_audio(piece)
        return sent / rate

    def audio_sent(self) -> np.ndarray:
        """Every sample sent so far on the media timeline (int16 mono at the declared rate, silence
        in gaps): what to mux under the frames to play the session back in sync."""
        if not self._audio_log or self.audio_rate is None:
            return np.zeros(0, np.int16)
        end = max(t * self.audio_rate // 1_000_000 + len(s) for t, s in self._audio_log)
        out = np.zeros(end, np.int16)
        for t, samples in self._audio_log:
            start = t * self.audio_rate // 1_000_000
            out[start:start + len(samples)] = samples
        return out

    async def pause(self) -> None:
        """Stop generating (the cache is kept)."""
        await self._send(SessionPause().dump())

    async def resume(self) -> None:
        """Restart generation after `pause`."""
        await self._send(SessionResume().dump())

    async def ping(self) -> None:
        """Ask for a `pong` (its arrival sets `last_pong_at`)."""
        await self._send(SessionPing().dump())

    async def stop(self, timeout: float = 10.0) -> str | None:
        """End the session: send `session.stop`, drop remaining chunks until `session.done`, close.

        Returns the done reason (None if the server closed without one).
        """
        if self.done_reason is None and not self._stop_sent:
            self._stop_sent = True
            try:
                await self.ws.send(json.dumps(SessionStop().dump()))
            except ConnectionClosed:
                return self.done_reason
            try:
                async with asyncio.timeout(timeout):
                    while self.done_reason is None and await self.next_message() is not None:
                        pass
            except (TimeoutError, FramecastError):
                pass
        await self.close()
        return self.done_reason

    async def close(self) -> None:
        """Close the socket without waiting for the server."""
        await self.ws.close()

    # ---- receiving ----------------------------------------------------------------------------

    async def next_message(self) -> Chunk | dict | None:
        """The next chunk or JSON event; None once the session is over.

        Raises the typed FramecastError of the server's last `error` if the connection closes
        before `session.done`, else ConnectionLostError.
        """
        if self.done_reason is not None:
            return None
        try:
            message = await self.ws.recv()
        except ConnectionClosed as exc:
            if self._stop_sent and exc.rcvd is not None and exc.rcvd.code == 1000:
                return None
            raise self._closed_error(exc) from exc
        if isinstance(message, bytes):
            return self._chunk(message)
        event = parse_server_event(message)
        self._record(event)
        return event

    async def next_chunk(self) -> Chunk | None:
        """The next chunk (JSON events in between are recorded); None once the session is over."""
        while True:
            message = await self.next_message()
            if message is None or isinstance(message, Chunk):
                return message

    def __aiter__(self) -> "AsyncRealtimeSession":
        return self

    async def __anext__(self) -> Chunk:
        chunk = await self.next_chunk()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def save_mp4(
        self,
        path: str | Path,
        seconds: float | None = None,
        max_frames: int | None = None,
        on_chunk: Callable[[Chunk], None] | None = None,
        stop: bool = True,
        audio: np.ndarray | bool | None = None,
    ) -> int:
        """Write the stream to an H.264 MP4 at the session's fps until `seconds` of video (or
        `max_frames` frames) were written or the session ends; returns the frame count.

        With neither limit it records until the session ends. `stop` ends the session afterwards.
        audio: an AAC track under the frames: int16 mono at the declared rate from media time 0, or
        True for the audio this session sends (`audio_sent()`, read as the frames come: an avatar's
        frames come after the audio that drives them). With audio, frames are placed by media time
        (`first_frame_index`): where the stream skipped media time (dropped chunks, or a paused
        avatar session) the last frame is held, so the audio stays in sync.
        """
        if seconds is not None:
            max_frames = round(seconds * self.info.fps)
        live_audio = audio is True
        if live_audio:
            audio = np.zeros(0, np.int16)
        audio_args = {} if audio is None or audio is False else {"audio": audio, "audio_rate": self.audio_rate or 16000}
        with Mp4Writer(path, self.info.fps, **audio_args) as writer:
            origin = None  # media frame of the first frame written
            async for chunk in self:
                frames = chunk.frames
                origin = chunk.first_frame_index if origin is None else origin
                gap = chunk.first_frame_index - origin - writer.frames_written  # media time skipped
                if audio_args and gap > 0:  # hold the last frame over it, as a player does
                    frames = np.concatenate([np.repeat(last[None], gap, axis=0), frames])
                last = chunk.frames[-1]
                if max_frames is not None:
                    frames = frames[: max_frames - writer.frames_written]
                if live_audio:
                    writer.set_audio(self.audio_sent())
                writer.write(frames)
                if on_chunk:
                    on_chunk(chunk)
                if max_frames is not None and writer.frames_written >= max_frames:
                    break
        if stop:
            await self.stop()
        return writer.frames_written

    async def __aenter__(self) -> "AsyncRealtimeSession":
        return self

    async def __aexit__(self, *exc_info) -> None:
        if exc_info[0] is None:
            await self.stop()
        else:
            await self.close()

    # ---- internals -----------------------------------------------------------------------------

    def _chunk(self, data: bytes) -> Chunk:
        now_mono = time.monotonic()
        try:
            message = parse_chunk(data)
            frames = self._decoder.decode(message)
        except ChunkFormatError as exc:
            raise ProtocolError(str(exc)) from exc
        chunk = Chunk(
            index=message.chunk_index,
            first_frame_index=message.first_frame_index,
            frames=frames,
            format=message.format,
            nbytes=len(data),
            received_at=time.time(),
            since_start_s=now_mono - self._started_at,
            interval_s=now_mono - self._last_chunk_at,
        )
        self._last_chunk_at = now_mono
        self.chunks_received += 1
        self.frames_received += len(frames)
        return chunk

    def _record(self, event: dict) -> None:
        self.events.append(event)
        kind = event.get("type")
        if kind == "stats":
            self.stats = event
        elif kind == "session.update.applied":
            self.applied[str(event.get("event_id"))] = int(event.get("chunk_index", -1))
        elif kind == "session.done":
            self.done_reason = str(event.get("reason", ""))
        elif kind == "error":
            self.errors.append(error_from_code(event.get("code"), str(event.get("message", ""))))
        elif kind == "pong":
            self.last_pong_at = time.time()
        if self.on_event:
            self.on_event(event)

    def _closed_error(self, exc: ConnectionClosed) -> FramecastError:
        return closed_error(exc, self.errors[-1] if self.errors else None)


def closed_error(exc: ConnectionClosed, last_error: FramecastError | None) -> FramecastError:
    """The exception for a connection that closed before the session ended normally."""
    code = exc.rcvd.code if exc.rcvd is not None else None
    if last_error is not None:
        last_error.status = last_error.status or code
        return last_error
    return error_from_close(code, exc.rcvd.reason if exc.rcvd is not None else "")


class _SessionOpener:
    """What `connect` returns: await it for a session, or use it as an async context manager."""

    def __init__(self, open_session: Callable[[], Any]):
        self._open_session = open_session
        self._session: AsyncRealtimeSession | None = None

    def __await__(self):
        return self._open_session().__await__()

    async def __aenter__(self) -> AsyncRealtimeSession:
        self._session = await self._open_session()
        return self._session

    async def __aexit__(self, *exc_info) -> None:
        assert self._session is not None
        await self._session.__aexit__(*exc_info)


class AsyncRealtimeClient:
    """Opens realtime sessions on one server.

    url:      server base URL (default $FRAMECAST_URL or http://127.0.0.1:8000)
    api_key:  API key (default $FRAMECAST_API_KEY); when set, a client token is minted per session
    open_timeout: seconds to wait for the connection and `session.started`
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, open_timeout: float = 60.0):
        self.base_url = resolve_base_url(url)
        self.api_key = resolve_api_key(api_key)
        self.open_timeout = open_timeout

    async def mint_token(self) -> str:
        """A short-lived client token for the WebSocket (`POST /v1/realtime/sessions`)."""
        try:
            async with httpx.AsyncClient(timeout=self.open_timeout) as http:
                response = await http.post(self.base_url + TOKEN_PATH, headers=auth_headers(self.api_key), json={})
        except httpx.TransportError as exc:
            raise ConnectionLostError(f"cannot reach {self.base_url}: {exc}") from exc
        return token_from_session_response(json_body(response))

    def connect(
        self,
        prompt: str,
        *,
        seed: int | None = None,
        format: str = "jpeg",
        image: str | Path | bytes | None = None,
        model: str | None = None,
        on_event: Callable[[dict], None] | None = None,
        audio_rate: int | None = None,
    ) -> _SessionOpener:
        """Start a session; `image` (path, bytes or data URL) starts the stream from a picture;
        `audio_rate` declares a streamed audio input (mono s16le at that rate, avatar models).

        Await the result, or use it with `async with`. Raises the typed FramecastError when the
        server refuses (capacity, unauthorized, bad_request, ...).
        """
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        audio = None if audio_rate is None else AudioInput.model_construct(sample_rate=int(audio_rate), channels=1)
        start = SessionStart.unchecked(prompt=prompt, format=format, seed=None if seed is None else int(seed),
                                       image=None if image is None else image_data_url(image), model=model,
                                       audio=audio)
        return _SessionOpener(lambda: self._open(start, on_event, audio_rate))

    async def _open(self, start: dict, on_event: Callable[[dict], None] | None,
                    audio_rate: int | None = None) -> AsyncRealtimeSession:
        url = websocket_url(self.base_url, REALTIME_PATH)
        if self.api_key:
            url += "?" + urlencode({"token": await self.mint_token()})
        try:
            ws = await websockets.connect(url, compression=None, max_size=None, open_timeout=self.open_timeout)
        except InvalidStatus as exc:
            response = exc.response
            body = response.body.decode("utf-8", "replace") if response.body else ""
            try:
                body = json.loads(body)
            except ValueError:
                pass
            raise error_from_http(response.status_code, body) from exc
        except (OSError, TimeoutError) as exc:
            raise ConnectionLostError(f"cannot connect to {url}: {exc}") from exc
        try:
            started_at = time.monotonic()
            try:
                await ws.send(json.dumps(start))
            except ConnectionClosed:
                pass  # refused before our start arrived: the buffered error event / close code says why
            async with asyncio.timeout(self.open_timeout):
                info = await _wait_started(ws, on_event)
        except BaseException:
            await ws.close()
            raise
        session = AsyncRealtimeSession(ws, info, started_at, on_event)
        session.audio_rate = audio_rate
        return session


async def _wait_started(ws: Any, on_event: Callable[[dict], None] | None) -> SessionInfo:
    """Read events until `session.started`; raise the server's error if it refuses the session."""
    last_error: FramecastError | None = None
    while True:
        try:
            message = await ws.recv()
        except ConnectionClosed as exc:
            raise closed_error(exc, last_error) from exc
        if isinstance(message, bytes):
            raise ProtocolError("server sent a chunk before session.started")
        event = parse_server_event(message)
        if on_event:
            on_event(event)
        if event["type"] == "session.started":
            return SessionInfo.from_event(event)
        if event["type"] == "error":
            last_error = error_from_code(event.get("code"), str(event.get("message", "")))
            # the server closes after a fatal start error; if it does not, report it anyway
            try:
                async with asyncio.timeout(2.0):
                    await ws.recv()
            except (ConnectionClosed, TimeoutError):
                pass
            raise last_error
