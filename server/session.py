"""One live realtime session: its engine stream, its encoder pipeline and its statistics.

device thread --deliver()--> raw chunk queue (bounded, drop-oldest)
    --encoder task (thread pool, one chunk at a time, in order)--> Outbox (bounded) --> WebSocket
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from concurrent.futures import Executor

from client.protocol.chunks import pack_chunk
from client.protocol.errors import InternalError
from client.protocol.events import SessionBehind, Stats
from server.engine import EngineStream
from server.metrics import Metrics
from server.outbox import OutgoingChunk, Outbox
from server.send_queue import DropOldestQueue

log = logging.getLogger("framecast.session")
_DONE = object()  # sentinel in the raw queue: everything before it is encoded, then stop


class Session:
    """Per-client state; all methods run on the event loop except `deliver`."""

    def __init__(self, *, fmt: str, encoder, outbox: Outbox, pool: Executor, metrics: Metrics, max_raw_chunks: int):
        self.id = "sess_" + uuid.uuid4().hex[:16]
        self.format = fmt
        self.encoder = encoder  # JpegChunkEncoder | Fmp4ChunkEncoder
        self.outbox = outbox
        self.pool = pool
        self.metrics = metrics
        self.loop = asyncio.get_running_loop()
        self.stream: EngineStream | None = None
        self.inputs: tuple[str, ...] = ()  # per-chunk input kinds declared in session.start
        self.started_at = time.monotonic()
        self.done = False
        self._raw: DropOldestQueue = DropOldestQueue(max_raw_chunks)  # (chunk, step_started, audio or None)
        self._first_encoded = False
        self._first_sent = False
        self._frames_generated = 0
        self._latencies: list[float] = []  # seconds, since the last stats event
        self._last_latency = 0.0
        self._stats_frames = 0
        self._stats_played = 0.0  # frames the real-time player had shown at the last stats event
        self._underruns_seen = 0  # underruns already looked at for a `session.behind` event
        self._stats_time = time.monotonic()
        self._tasks: list[asyncio.Task] = []
        outbox.on_chunk_sent = self._chunk_sent

    # ---- producer side (device thread) ----
    def deliver(self, chunk, step_started: float, audio=None) -> None:
        """Engine callback: hand a generated chunk (and, with audio input, the int16 audio under
        its frames) to the event loop (never blocks)."""
        self.loop.call_soon_threadsafe(self._accept_raw, chunk, step_started, audio)

    def _accept_raw(self, chunk, step_started: float, audio=None) -> None:
        if self.done:
            return
        self._frames_generated += len(chunk.frames)
        self._report_if_behind()
        must_keep = chunk.index == 0 and self.format == "fmp4"  # the init segment travels with it
        dropped = self._raw.put((chunk, step_started, audio), droppable=not must_keep)
        self.metrics.dropped_chunks.inc(dropped)

    # ---- pipeline ----
    def start_tasks(self, stats_interval_s: float) -> None:
        self._tasks = [
            asyncio.create_task(self._encode_loop(), name=f"{self.id}-encode"),
            asyncio.create_task(self._stats_loop(stats_interval_s), name=f"{self.id}-stats"),
        ]

    async def _encode_loop(self) -> None:
        try:
            await self._encode_chunks()
        except Exception:
            log.exception("session %s: encoding failed", self.id)
            error = InternalError("encoding failed")
            self.outbox.event(error.event())
            self.outbox.close(error.close_code)

    async def _encode_chunks(self) -> None:
        while True:
            item = await self._raw.get()
            if item is _DONE:
                return
            chunk, step_started, audio = item
            payload = await self.loop.run_in_executor(
                self.pool, self.encoder.encode, chunk.frames, chunk.first_frame_index, audio
            )
            first = not self._first_encoded
            self._first_encoded = True
            message = pack_chunk(
                self.format, payload, frame_count=len(chunk.frames), chunk_index=chunk.index,
                first_frame_index=chunk.first_frame_index, first=first,
            )
            keep = first and self.format == "fmp4"
            dropped = self.outbox.chunk(OutgoingChunk(message, step_started, len(chunk.frames), chunk.first_frame_index), droppable=not keep)
            self.metrics.dropped_chunks.inc(dropped)

    async def _stats_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.outbox.event(self.stats().dump())

    def _chunk_sent(self, chunk: OutgoingChunk, sent_at: float) -> None:
        if self.stream is not None and self.stream.pacer is not None:
            self.stream.pacer.clock.align(chunk.first_frame, sent_at)  # the viewer has it from about now
        latency = sent_at - chunk.step_started
        self._latencies.append(latency)
        self._last_latency = latency
        self.metrics.chunk_latency.observe(latency)
        if not self._first_sent:
            self._first_sent = True
            self.metrics.time_to_first_frame.observe(sent_at - self.started_at)

    # ---- reporting ----
    @property
    def dropped(self) -> int:
        return self._raw.dropped + self.outbox.queue.dropped

    @property
    def queue_depth(self) -> int:
        return self._raw.depth + self.outbox.queue.depth

    def _report_if_behind(self) -> None:
        """After an underrun (the device did not keep real time): a `session.behind` event, rate-limited."""
        pacer = self.stream.pacer if self.stream else None
        if pacer is None or pacer.clock.underruns == self._underruns_seen:
            return
        self._underruns_seen = pacer.clock.underruns
        now = time.monotonic()
        if pacer.should_report_behind(now):
            self.outbox.event(SessionBehind(fps=pacer.clock.fps, achieved_fps=round(pacer.achieved_fps(), 2),
                                            underruns=pacer.clock.underruns).dump())

    def stats(self) -> Stats:
        """The `stats` event; rates cover the time since the previous call."""
        now = time.monotonic()
        elapsed = max(now - self._stats_time, 1e-9)
        fps = (self._frames_generated - self._stats_frames) / elapsed
        latency = sum(self._latencies) / len(self._latencies) if self._latencies else self._last_latency
        pacing = self.stream.pacer.stats(now) if self.stream and self.stream.pacer else None
        played = pacing.played_frames if pacing else 0.0
        played_fps = (played - self._stats_played) / elapsed
        self._stats_time, self._stats_frames, self._stats_played, self._latencies = (
            now, self._frames_generated, played, [])
        event = Stats(
            generated_fps=round(fps, 2), played_fps=round(played_fps, 2), sent=self.outbox.sent_chunks,
            dropped=self.dropped, queue_depth=self.queue_depth, chunk_latency_ms=round(latency * 1000, 1),
            lead_s=round(pacing.lead_s, 3) if pacing else 0.0,
            max_lead_s=round(pacing.max_lead_s, 3) if pacing else None,
            last_switch_s=round(pacing.last_switch_s, 3) if pacing and pacing.last_switch_s is not None else None,
            underruns=pacing.underruns if pacing else 0,
        )
        self.metrics.set_session(self.id, event.dump())
        return event

    # ---- ending ----
    async def finish(self, timeout: float) -> None:
        """Stop the stats task, let the encoder flush what was generated (up to `timeout`)."""
        self.done = True
        self._raw.put(_DONE, droppable=False)
        encode_task, stats_task = self._tasks or (None, None)
        if stats_task:
            stats_task.cancel()
        if encode_task:
            try:
                await asyncio.wait_for(encode_task, timeout)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass
            except Exception:  # an encoder failure must not block the session's end
                pass

    def cancel(self) -> None:
        """Abandon the pipeline at once (the client is gone)."""
        self.done = True
        self.metrics.forget_session(self.id)
        for task in self._tasks:
            task.cancel()

    def release(self) -> None:
        """Drop every reference that ties this session to its tasks, outbox and engine stream.

        Called once the session has ended, however it ended. Without it the session, its engine
        stream and the stream's tensors sit in reference cycles (session <-> outbox callback,
        session <-> stream callback, session -> task -> CancelledError traceback -> frame ->
        session) that only a full gc pass frees, so a busy server's memory grows per session.
        """
        self.cancel()
        self._tasks = []  # a cancelled task keeps its CancelledError, whose frames hold `self`
        self._raw.clear()
        if self.outbox.on_chunk_sent == self._chunk_sent:
            self.outbox.on_chunk_sent = None
        self.stream = None
