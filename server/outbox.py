"""Everything a realtime connection sends goes through one Outbox and one sender task.

JSON events are never dropped; binary chunks are bounded (drop-oldest) so a client that reads
slowly (or never) loses old chunks instead of stalling anyone. A single sender keeps sends on
the WebSocket ordered and never concurrent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.websockets import WebSocket

from server.send_queue import DropOldestQueue

log = logging.getLogger("framecast.outbox")


@dataclass
class OutgoingChunk:
    """An encoded chunk message waiting to be sent."""

    message: bytes  # header + payload
    step_started: float  # time.monotonic() when its generation began
    frames: int
    first_frame: int = 0  # first_frame_index of the chunk (the pacer's player cannot show it before it is sent)


@dataclass
class CloseRequest:
    """Sentinel: close the socket with this code after everything before it was sent."""

    code: int


class Outbox:
    """Queue + sender loop for one WebSocket."""

    def __init__(self, ws: WebSocket, max_chunks: int, max_events: int = 256):
        self.ws = ws
        self.queue: DropOldestQueue = DropOldestQueue(max_chunks)
        self.max_events = max_events  # unsent JSON events; more means the client stopped reading
        self.overflowed = False  # max_events was exceeded: nothing more is queued, the socket must go
        self.sent_chunks = 0
        self.closed = asyncio.Event()  # set when the sender ended (closed or the peer vanished)
        self.on_chunk_sent: Callable[[OutgoingChunk, float], None] | None = None  # (chunk, send time)

    def event(self, payload: dict) -> None:
        if self.overflowed:
            return
        if len(self.queue) - self.queue.depth >= self.max_events:  # events never drop: stop here
            log.warning("client is not reading: %d events unsent, closing", self.max_events)
            self.overflowed = True
            self.queue.clear()
            self.closed.set()  # the receive loop ends and the connection is torn down
            return
        self.queue.put(payload, droppable=False)

    def chunk(self, chunk: OutgoingChunk, droppable: bool = True) -> int:
        """Enqueue; returns the number of old chunks dropped."""
        return self.queue.put(chunk, droppable=droppable)

    def close(self, code: int) -> None:
        if not self.overflowed:
            self.queue.put(CloseRequest(code), droppable=False)

    def clear(self) -> None:
        """Forget what was not sent and the send callback (the connection has ended)."""
        self.queue.clear()
        self.on_chunk_sent = None

    async def run(self) -> None:
        """Send until a CloseRequest or a dead socket."""
        try:
            while True:
                item = await self.queue.get()
                if isinstance(item, CloseRequest):
                    await self.ws.close(item.code)
                    return
                if isinstance(item, OutgoingChunk):
                    await self.ws.send_bytes(item.message)
                    self.sent_chunks += 1
                    if self.on_chunk_sent:
                        self.on_chunk_sent(item, time.monotonic())
                else:
                    await self.ws.send_json(item)
        except Exception as exc:  # the peer went away mid-send: nothing more can be sent
            log.debug("sender stopped: %r", exc)
        finally:
            self.closed.set()
