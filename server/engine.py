"""The engine: ONE device loop thread per model that batches every runnable stream per tick.

Each tick takes all live, non-paused streams (realtime sessions) and, while live sessions leave
room, job streams, and advances them together with one `gen.step([...])` (one batched forward per
denoising pass). Every generator call (open, set_prompt, step, close) happens on the device
thread, because the generator is not thread-safe; other threads send commands and get futures.
Chunks are handed to each stream's `on_chunk` callback on the device thread; callbacks must only
enqueue (encoding happens elsewhere).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from server.metrics import Metrics

log = logging.getLogger("framecast.engine")


class EngineCapacityError(Exception):
    """No free slot for another live session (or job stream)."""


class EngineStopped(Exception):
    """The engine is shutting down and admits nothing new."""


@dataclass(eq=False)
class EngineStream:
    """One generator stream driven by the device loop (plain data; the engine mutates it)."""

    live: bool  # realtime session (priority, counted against max_sessions) or job
    on_chunk: Callable[[Any, float], None]  # (Chunk, step start time.monotonic()), on the device thread
    on_error: Callable[[str], None]  # generation failed for this stream; it is closed
    state: Any = None  # the generator's StreamState, set once opened
    paused: bool = False  # not stepped while paused (its cache is kept)
    closing: bool = False  # close() was called: not stepped any more, its slot is already free
    closed: bool = False  # its cache row was returned to the generator
    released: bool = False  # its admission slot was returned
    pending_prompts: deque = field(default_factory=deque)  # (prompt, transition_chunks, on_applied)


class Engine:
    """Owns the generator and its device loop thread."""

    def __init__(self, generator: Any, *, max_sessions: int, max_running_jobs: int, metrics: Metrics | None = None):
        self.gen = generator
        self.max_sessions = max_sessions
        self.max_running_jobs = max_running_jobs
        self.metrics = metrics
        self._streams: list[EngineStream] = []  # opened, not closed (device-thread view)
        self._reserved_live = 0  # live streams admitted (opening or open)
        self._reserved_jobs = 0  # job streams admitted
        self._commands: deque[Callable[[], None]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="framecast-device-loop", daemon=True)

    # ---- lifecycle ----
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Admit nothing new, finish the tick in flight, close every stream, end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stopping

    # ---- admission ----
    @property
    def live_sessions(self) -> int:
        return self._reserved_live

    def has_room_for_live(self) -> bool:
        return not self._stopping and self._reserved_live < self.max_sessions

    def has_room_for_job(self) -> bool:
        return not self._stopping and self._reserved_jobs < self.max_running_jobs

    # ---- commands (any thread) ----
    def open(
        self,
        prompt: str,
        *,
        seed: int | None,
        image: np.ndarray | None,
        live: bool,
        on_chunk: Callable[[Any, float], None],
        on_error: Callable[[str], None],
    ) -> Future:
        """Future[EngineStream]. Raises EngineCapacityError / EngineStopped at once when full."""
        with self._cond:
            if self._stopping:
                raise EngineStopped("the server is shutting down")
            if live and self._reserved_live >= self.max_sessions:
                raise EngineCapacityError(f"all {self.max_sessions} session slots are busy")
            if not live and self._reserved_jobs >= self.max_running_jobs:
                raise EngineCapacityError("no free job slot")
            if live:
                self._reserved_live += 1
            else:
                self._reserved_jobs += 1
        stream = EngineStream(live=live, on_chunk=on_chunk, on_error=on_error)

        def do_open() -> EngineStream:
            try:
                stream.state = self.gen.open_stream(prompt, seed=seed, image=image)
            except BaseException:
                self._release(stream)
                raise
            self._streams.append(stream)
            return stream

        return self._submit(do_open)

    def set_prompt(self, stream: EngineStream, prompt: str, transition_chunks: int,
                   on_applied: Callable[[int], None] | None = None) -> None:
        """New prompt from the stream's next chunk; `on_applied(chunk_index)` runs on the device thread."""
        with self._cond:
            stream.pending_prompts.append((prompt, transition_chunks, on_applied))
            self._cond.notify_all()

    def pause(self, stream: EngineStream) -> None:
        stream.paused = True

    def resume(self, stream: EngineStream) -> None:
        with self._cond:
            stream.paused = False
            self._cond.notify_all()

    def close(self, stream: EngineStream) -> Future:
        """Stop stepping the stream and free its slot now, its cache row on the device thread
        (before any later open, since commands run in order). Idempotent."""
        stream.closing = True
        self._release(stream)
        return self._submit(lambda: self._close_now(stream))

    # ---- device thread ----
    def _submit(self, fn: Callable[[], Any]) -> Future:
        future: Future = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as exc:  # delivered to the caller through the future
                future.set_exception(exc)

        with self._cond:
            self._commands.append(run)
            self._cond.notify_all()
        return future

    def _release(self, stream: EngineStream) -> None:
        with self._cond:
            if stream.released:
                return
            stream.released = True
            if stream.live:
                self._reserved_live -= 1
            else:
                self._reserved_jobs -= 1

    def _close_now(self, stream: EngineStream) -> None:
        if stream.closed or stream.state is None:
            return
        stream.closed = True
        self._streams.remove(stream)
        self._release(stream)
        try:
            self.gen.close_stream(stream.state)
        except Exception:
            log.exception("close_stream failed")

    def _runnable(self) -> list[EngineStream]:
        """This tick's batch: live streams first, then jobs while live ones leave room."""
        runnable = [s for s in self._streams if not s.paused and not s.closing]
        live = [s for s in runnable if s.live]
        jobs = [s for s in runnable if not s.live]
        room = max(self.max_sessions - len(live), 0)
        return live + jobs[:room]

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._commands and not self._stopping and not self._runnable():
                    self._cond.wait()
                commands = list(self._commands)
                self._commands.clear()
                stopping = self._stopping
            for command in commands:
                command()
            if stopping:
                break
            batch = self._runnable()
            if batch:
                self._tick(batch)
        for stream in list(self._streams):
            self._close_now(stream)
        with self._cond:  # commands that raced with stop: run them so no future hangs
            commands = list(self._commands)
            self._commands.clear()
        for command in commands:
            command()

    def _tick(self, batch: list[EngineStream]) -> None:
        for stream in batch:
            while stream.pending_prompts:
                prompt, transition_chunks, on_applied = stream.pending_prompts.popleft()
                self.gen.set_prompt(stream.state, prompt, transition_chunks=transition_chunks)
                if on_applied:
                    _call_quietly(on_applied, stream.state.chunk_index)
        started = time.monotonic()
        try:
            chunks = self.gen.step([s.state for s in batch])
        except Exception:
            log.exception("generator step failed for %d stream(s)", len(batch))
            for stream in batch:
                _call_quietly(stream.on_error, "generation failed")
                self._close_now(stream)
            return
        elapsed = time.monotonic() - started
        frames = sum(len(c.frames) for c in chunks)
        if self.metrics:
            self.metrics.step_seconds.observe(elapsed)
            self.metrics.generated_frames.inc(frames)
            self.metrics.generated_fps.set(frames / max(elapsed, 1e-9))
        for stream, chunk in zip(batch, chunks):
            _call_quietly(stream.on_chunk, chunk, started)


def _call_quietly(fn: Callable, *args: Any) -> None:
    """Run a callback; its failure is logged and never stops the device loop."""
    try:
        fn(*args)
    except Exception:
        log.exception("engine callback failed")
