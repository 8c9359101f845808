"""`WS /v1/realtime`: JSON control messages in; JSON events and binary chunks out (docs/PROTOCOL.md)."""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketState

from client.protocol.chunks import FORMATS, ChunkFormatError, parse_input
from client.protocol.errors import (
    CLOSE_NORMAL, CLOSE_SHUTDOWN, BadRequestError, CapacityError, FramecastError, InternalError, TooLargeError,
    UnauthorizedError, UnsupportedError,
)
from client.protocol.events import (
    AUDIO_FORMATS, Pong, SessionDone, SessionPause, SessionPing, SessionResume, SessionStart, SessionStarted, SessionStop,
    SessionUpdate, SessionUpdateApplied, parse_client_message,
)
from models.generator import CapacityError as ModelCapacityError
from models.stream_api import ChunkInput, Conditioning
from server.audio_track import AudioFormat
from server.encoders import make_encoder
from server.engine import EngineCapacityError, EngineStopped
from server.images import decode_image
from server.limits import RateBudget, origin_allowed
from server.outbox import Outbox
from server.pacing import UpdateApplied
from server.protocol import check_model_request
from server.session import Session
from server.state import ServerState

log = logging.getLogger("framecast.realtime")
router = APIRouter()


@router.websocket("/v1/realtime")
async def realtime(ws: WebSocket) -> None:
    state: ServerState = ws.app.state.framecast
    await ws.accept()
    connection = RealtimeConnection(ws, state)
    state.connections.add(connection)
    try:
        await connection.run()
    finally:
        state.connections.discard(connection)


class RealtimeConnection:
    """One WebSocket: authenticates, parses messages, drives at most one Session."""

    def __init__(self, ws: WebSocket, state: ServerState):
        self.ws = ws
        self.state = state
        settings = state.settings
        self.outbox = Outbox(ws, settings.send_queue_chunks, max_events=settings.max_pending_events)
        self.session: Session | None = None
        self.ending = False  # a close was queued; ignore further input
        self.expires_at: float | None = None  # unix time the client token (and so the session) ends
        self.opened_at = time.monotonic()
        self.loop = asyncio.get_running_loop()
        self.client = ws.client.host if ws.client else None  # the address (uvicorn: from X-Forwarded-For of trusted proxies)
        self.refused = False  # a message of this socket was refused: it is throttled with its client's budget

    async def run(self) -> None:
        sender = asyncio.create_task(self.outbox.run())
        try:
            error = self._admission_error()  # once: redeeming a token uses it up
            if error:
                self._fail(error)
            else:
                await self._receive_loop()
        except Exception:
            log.exception("realtime connection failed")
            self._fail(InternalError("internal server error"))
        finally:
            await self._cleanup(sender)

    def _admission_error(self) -> FramecastError | None:
        state, settings, ws = self.state, self.state.settings, self.ws
        if not origin_allowed(ws.headers.get("origin"), ws.headers.get("host"), settings.cors_origins):
            return UnauthorizedError("this page's origin may not open realtime sessions")
        if state.auth.check_bearer(ws.headers.get("authorization")):
            self.expires_at = None  # an API key (or auth off): no expiry
        else:
            expires_at = state.auth.redeem_token(ws.query_params.get("token"))
            if expires_at is None:
                return UnauthorizedError("missing, invalid, expired or already used token")
            self.expires_at = float(expires_at)
        if not state.admitting:
            return CapacityError("the server is shutting down")
        if len(state.connections) > settings.max_connections:
            return CapacityError(f"over {settings.max_connections} open connections")
        if sum(c.client == self.client for c in state.connections) > settings.max_connections_per_client:
            return CapacityError(f"over {settings.max_connections_per_client} open connections from one client")
        if not state.engine.has_room_for_live():
            return CapacityError(f"all {settings.max_sessions} session slots are busy")
        return None

    def _deadline_error(self) -> tuple[float | None, FramecastError | None]:
        """(seconds until the socket must end, the error it ends with): a socket that never started
        a session ends after idle_timeout_s, one opened with a client token when the token expires."""
        deadlines = []
        if self.session is None:
            idle = self.state.settings.idle_timeout_s
            deadlines.append((self.opened_at + idle - time.monotonic(),
                              BadRequestError(f"no session.start within {idle:g} s")))
        if self.expires_at is not None:
            deadlines.append((self.expires_at - time.time(), UnauthorizedError("client token expired")))
        return min(deadlines, key=lambda d: d[0]) if deadlines else (None, None)

    def _fail(self, error: FramecastError) -> None:
        """Send the error event and close with the matching code."""
        self.outbox.event(error.event())
        self._close(error.close_code)

    def _close(self, code: int) -> None:
        if not self.ending:
            self.ending = True
            self.outbox.close(code)

    async def _receive_loop(self) -> None:
        settings = self.state.settings
        limit = settings.max_message_bytes
        budget = RateBudget(settings.max_messages_per_s, settings.max_message_burst)
        while not self.ending:
            timeout, timeout_error = self._deadline_error()
            if timeout is not None and timeout <= 0:
                self._fail(timeout_error)
                return
            pause = self._throttle_s()
            if pause > 0:  # leave the socket unread: its client's refused messages used up their budget
                self.state.metrics.throttled_reads.inc()
                try:
                    await asyncio.wait_for(self.outbox.closed.wait(), min(pause, timeout) if timeout is not None else pause)
                    return  # the socket closed meanwhile
                except asyncio.TimeoutError:
                    continue
            receive = asyncio.create_task(self.ws.receive())
            closed = asyncio.create_task(self.outbox.closed.wait())
            done, _ = await asyncio.wait({receive, closed}, timeout=max(timeout, 0) if timeout is not None else None,
                                         return_when=asyncio.FIRST_COMPLETED)
            if receive not in done:
                receive.cancel()
                closed.cancel()
                if not done:
                    self._fail(timeout_error)
                return
            closed.cancel()
            message = receive.result()
            if message["type"] == "websocket.disconnect":
                return
            text, data = message.get("text"), message.get("bytes")
            if text is not None and not budget.take():  # control messages only: streamed inputs are binary
                self._fail(CapacityError(f"over {settings.max_messages_per_s:g} control messages per second"))
                return
            try:
                if text is None:
                    if data is not None and len(data) > limit:
                        raise TooLargeError(f"message over the {limit}-byte limit")
                    self._input(data or b"")
                    continue
                if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
                    raise TooLargeError(f"message over the {limit}-byte limit")
                parsed = parse_client_message(text, max_prompt_chars=self.state.max_prompt_chars)
                await self._handle(parsed)
            except FramecastError as error:
                self._refuse(len(text) if text is not None else len(data or b""))
                if isinstance(error, (UnauthorizedError, CapacityError, InternalError)):
                    self._fail(error)
                else:  # the session goes on
                    self.outbox.event(error.event())

    def _throttle_s(self) -> float:
        """Seconds to leave the socket unread: while its client address's refusal budget is spent,
        for sockets that had a message refused or have no session yet (a session in progress
        that was never refused is not slowed by others behind the same address)."""
        if not self.refused and self.session is not None:
            return 0.0
        return self.state.budgets.wait_s(self.client)

    def _refuse(self, size: int) -> None:
        """A message of `size` bytes was answered with an error: charge the client's budget."""
        self.refused = True
        self.state.metrics.refused_messages.inc()
        self.state.budgets.charge(self.client, size)

    async def _handle(self, message) -> None:
        if isinstance(message, SessionPing):
            self.outbox.event(Pong().dump())
        elif isinstance(message, SessionStart):
            await self._start(message)
        elif isinstance(message, SessionStop):
            await self._end("stopped", CLOSE_NORMAL)
        elif self.session is None or self.session.stream is None:
            raise BadRequestError(f"{message.type} before session.start")
        elif isinstance(message, SessionUpdate):
            self._update(message)
        elif isinstance(message, SessionPause):
            self.state.engine.pause(self.session.stream)
        elif isinstance(message, SessionResume):
            self.state.engine.resume(self.session.stream)

    def _input(self, data: bytes) -> None:
        """A binary input message: a per-chunk input the session declared in session.start."""
        try:
            message = parse_input(data)
        except ChunkFormatError as exc:
            raise BadRequestError(f"binary input: {exc}") from None
        if self.session is None or self.session.stream is None:
            raise BadRequestError("binary input before session.start")
        if message.kind not in self.session.inputs:
            raise UnsupportedError(f"input {message.kind!r} was not declared in session.start")
        self.state.engine.feed(self.session.stream, ChunkInput(message.kind, message.media_time_us, message.payload))

    async def _start(self, message: SessionStart) -> None:
        state, info = self.state, self.state.info
        if self.session is not None:
            raise BadRequestError("session already started")
        if message.format not in FORMATS:
            raise UnsupportedError(f"field 'format': {message.format[:32]!r} is not one of {list(FORMATS)}",
                                   param="format")
        inputs = message.declared_inputs()
        check_model_request(info, message.model, inputs)
        audio = None
        if message.audio is not None:
            if message.audio.format not in AUDIO_FORMATS:
                raise UnsupportedError(f"field 'audio.format': {message.audio.format[:32]!r} is not one of "
                                       f"{list(AUDIO_FORMATS)}", param="audio.format")
            audio = AudioFormat(message.audio.sample_rate, message.audio.channels)
        image = None
        if message.image is not None:
            settings = state.settings
            image = await asyncio.to_thread(
                decode_image, message.image, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels,
                max_aspect=settings.max_image_aspect, size=(info.width, info.height),  # no resize on the device thread
            )
        if not state.admitting:
            raise CapacityError("the server is shutting down")
        encoder = make_encoder(message.format, fps=info.fps, jpeg_quality=state.settings.jpeg_quality,
                               audio_rate=audio.sample_rate if audio else None)
        session = Session(fmt=message.format, encoder=encoder, outbox=self.outbox, pool=state.pool,
                          metrics=state.metrics, max_raw_chunks=state.settings.send_queue_chunks)
        try:
            conditioning = Conditioning(message.prompt, seed=message.seed, image=image, inputs=inputs)
            future = state.engine.open(conditioning, live=True, on_chunk=session.deliver,
                                       on_error=self._on_generation_error, max_lead_s=message.max_lead_s,
                                       audio=audio, audio_window_s=state.settings.max_audio_ahead_s)
            session.stream = await asyncio.wrap_future(future)
        except (EngineCapacityError, EngineStopped) as exc:
            raise CapacityError(str(exc)) from None
        except ModelCapacityError:  # no free cache row
            raise CapacityError("no free generation slot") from None
        except Exception:
            log.exception("opening the stream failed")
            raise InternalError("could not start the stream") from None
        session.inputs = inputs
        self.session = session  # set even when ending: the teardown releases it
        if self.ending:  # generation failed before we got here: the error is already on its way
            return
        self.outbox.event(SessionStarted(session_id=session.id, model=info.name, width=info.width, height=info.height,
                                         fps=info.fps, chunk_frames=info.chunk_frames, format=message.format,
                                         max_lead_s=session.stream.pacer.max_lead_s).dump())
        session.start_tasks(state.settings.stats_interval_s)

    def _update(self, message: SessionUpdate) -> None:
        loop = asyncio.get_running_loop()
        event_id = message.event_id

        def applied(update: UpdateApplied) -> None:  # device thread
            event = SessionUpdateApplied(event_id=event_id, chunk_index=update.chunk_index,
                                         media_time_s=round(update.media_time_s, 4),
                                         latency_s=round(update.latency_s, 4))
            loop.call_soon_threadsafe(self.outbox.event, event.dump())

        self.state.engine.set_prompt(self.session.stream, message.prompt, message.transition_chunks, applied, cut=message.cut)

    def _on_generation_error(self, message: str) -> None:  # device thread
        # the connection's own loop: the step may fail before `_start` has set self.session
        self.loop.call_soon_threadsafe(self._fail, InternalError(message))

    async def _end(self, reason: str, code: int) -> None:
        """Stop generating, flush what was generated, send session.done and close."""
        if self.ending:
            return
        if self.session is not None:
            if self.session.stream is not None:
                self.state.engine.close(self.session.stream)
            await self.session.finish(self.state.settings.shutdown_grace_s)
        self.outbox.event(SessionDone(reason=reason).dump())
        self._close(code)

    async def shutdown(self) -> None:
        """Graceful server shutdown: the chunk in flight was delivered; say goodbye."""
        await self._end("shutdown", CLOSE_SHUTDOWN)

    async def _cleanup(self, sender: asyncio.Task) -> None:
        """The one teardown every ending goes through (stop, close, abort, error, shutdown):
        free the engine slot and cache row, stop the session's tasks, flush and close the
        socket, then drop the references that would keep the session's memory in gc cycles."""
        session = self.session
        if session is not None:
            if session.stream is not None:
                self.state.engine.close(session.stream)
            session.cancel()
        self._close(CLOSE_NORMAL)  # the client went away: end the sender now (no-op if a close is queued)
        grace = 0 if self.outbox.overflowed else self.state.settings.shutdown_grace_s  # overflowed: it is stuck
        try:
            await asyncio.wait_for(sender, grace)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            sender.cancel()
        if self.ws.application_state != WebSocketState.DISCONNECTED and self.ws.client_state != WebSocketState.DISCONNECTED:
            try:
                await self.ws.close(CLOSE_NORMAL)
            except Exception:
                pass
        if session is not None:
            session.release()
        self.outbox.clear()
