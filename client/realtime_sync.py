"""The blocking realtime client: `RealtimeClient(url).connect(prompt, ...)` is `AsyncRealtimeClient`'s
session driven from an asyncio loop in a daemon thread, so sync callers keep the socket serviced
(keepalive) between their calls:

    with RealtimeClient().connect("a red ball", seed=1) as session:
        session.save_mp4("out.mp4", seconds=3)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from client.realtime import AsyncRealtimeClient, AsyncRealtimeSession, Chunk


class _LoopThread:
    """An asyncio loop in a daemon thread, so sync callers keep the socket serviced (keepalive)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="framecast-realtime", daemon=True)
        self._thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def shutdown(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


class RealtimeSession:
    """Blocking view of an AsyncRealtimeSession (same attributes; iterate for chunks)."""

    def __init__(self, session: AsyncRealtimeSession, runner: _LoopThread):
        self._session = session
        self._runner = runner
        self._closed = False  # stop() or close() ran: the loop thread is gone

    def __getattr__(self, name: str) -> Any:  # info, stats, applied, errors, events, done_reason, ...
        return getattr(self._session, name)

    def update(self, prompt: str, transition_chunks: int = 0, event_id: str | None = None, cut: bool = False) -> str:
        """Switch to `prompt` from the next chunk boundary (`cut`: a scene cut); returns the event_id."""
        return self._runner.run(self._session.update(prompt, transition_chunks, event_id, cut=cut))

    def pause(self) -> None:
        self._runner.run(self._session.pause())

    def resume(self) -> None:
        self._runner.run(self._session.resume())

    def ping(self) -> None:
        self._runner.run(self._session.ping())

    def next_message(self) -> Chunk | dict | None:
        return self._runner.run(self._session.next_message())

    def next_chunk(self) -> Chunk | None:
        return self._runner.run(self._session.next_chunk())

    def __iter__(self) -> Iterator[Chunk]:
        while (chunk := self.next_chunk()) is not None:
            yield chunk

    def save_mp4(self, path: str | Path, seconds: float | None = None, max_frames: int | None = None,
                 on_chunk: Callable[[Chunk], None] | None = None, stop: bool = True,
                 audio: np.ndarray | bool | None = None) -> int:
        """See AsyncRealtimeSession.save_mp4."""
        return self._runner.run(self._session.save_mp4(path, seconds, max_frames, on_chunk, stop, audio))

    def send_audio(self, pcm: bytes | np.ndarray, media_time_s: float | None = None) -> None:
        """See AsyncRealtimeSession.send_audio."""
        self._runner.run(self._session.send_audio(pcm, media_time_s))

    def stream_audio_in_background(self, source: Any, **options: Any):
        """Start AsyncRealtimeSession.stream_audio on the session's loop; returns a
        concurrent.futures.Future of the seconds sent (iterate chunks meanwhile)."""
        return asyncio.run_coroutine_threadsafe(self._session.stream_audio(source, **options), self._runner.loop)

    def stop(self, timeout: float = 10.0) -> str | None:
        """End the session and close; returns the done reason (idempotent)."""
        if self._closed:
            return self._session.done_reason
        self._closed = True
        try:
            return self._runner.run(self._session.stop(timeout))
        finally:
            self._runner.shutdown()

    def close(self) -> None:
        """Close the socket without waiting for the server (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._runner.run(self._session.close())
        finally:
            self._runner.shutdown()

    def __enter__(self) -> "RealtimeSession":
        return self

    def __exit__(self, exc_type, *rest) -> None:
        if exc_type is None:
            self.stop()
        else:
            self.close()


async def _await(awaitable: Any) -> Any:
    """Wrap an awaitable in a coroutine (run_coroutine_threadsafe needs one)."""
    return await awaitable


class RealtimeClient:
    """Blocking realtime client; same arguments as AsyncRealtimeClient."""

    def __init__(self, url: str | None = None, api_key: str | None = None, open_timeout: float = 60.0):
        self._async = AsyncRealtimeClient(url, api_key, open_timeout)
        self.base_url = self._async.base_url

    def connect(self, prompt: str, **options: Any) -> RealtimeSession:
        """Start a session (see AsyncRealtimeClient.connect); use it as a context manager."""
        opener = self._async.connect(prompt, **options)
        runner = _LoopThread()
        try:
            session = runner.run(_await(opener))
        except BaseException:
            runner.shutdown()
            raise
        return RealtimeSession(session, runner)
