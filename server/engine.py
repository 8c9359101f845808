"""The engine: ONE device loop thread per model that batches every runnable stream per tick.

Live streams (realtime sessions) are paced to real time (server/pacing.py): a tick runs when a
live stream's next chunk is due or a job stream waits (jobs are unpaced), and advances together,
with one `gen.step([...])` (one batched forward per denoising pass), every live stream that falls
due before the step ends plus, while live sessions leave room, the job streams. With nothing due
the device idles until the earliest due time. Every generator call (open, set_prompt, step,
close) happens on the device thread, because the generator is not thread-safe; other threads send commands and get futures.
Chunks are handed to each stream's `on_chunk` callback on the device thread; callbacks must only
enqueue (encoding happens elsewhere).

Streams with audio input (avatar models) keep it in an AudioTrack (server/audio_track.py): before
each chunk the engine feeds the model the audio up to the chunk's end plus the model's look-ahead
(silence where none arrived: a stream never waits past its deadline for audio), and hands the audio
under the chunk's frames to `on_chunk` as a third argument, for the muxer. A live audio stream's
first chunk waits until the audio it needs has arrived (or as long as that audio takes to arrive
in real time), which sets the session's audio-to-screen delay so that later chunks find their audio
already there at their usual due time (docs/PROTOCOL.md, "Audio and video timing").
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from client.protocol.errors import BadRequestError
from models.generator import Chunk, StreamState
from models.stream_api import ChunkInput, Conditioning, StreamingModel, check_prompt_switch
from server.audio_track import AudioFormat, AudioTrack, model_audio_rate
from server.metrics import Metrics
from server.pacing import Pacer, UpdateApplied, plan_step

log = logging.getLogger("framecast.engine")


class EngineCapacityError(Exception):
    """No free slot for another live session (or job stream)."""


class EngineStopped(Exception):
    """The engine is shutting down and admits nothing new."""


@dataclass(eq=False)
class EngineStream:
    """One generator stream driven by the device loop (plain data; the engine mutates it)."""

    live: bool  # realtime session (priority, counted against max_sessions) or job
    on_chunk: Callable[[Chunk, float], None]  # (chunk, step start time.monotonic()), on the device thread
    on_error: Callable[[str], None]  # generation failed for this stream; it is closed
    state: StreamState | None = None  # the generator's stream, set once opened
    paused: bool = False  # not stepped while paused (its cache is kept)
    closing: bool = False  # close() was called: not stepped any more, its slot is already free
    closed: bool = False  # its cache row was returned to the generator
    released: bool = False  # its admission slot was returned
    pending_prompts: deque = field(default_factory=deque)  # (prompt, transition_chunks, cut, on_applied, play position s)
    pacer: Pacer | None = None  # live streams: playback clock and due time; None for (unpaced) jobs
    pending_inputs: list[ChunkInput] = field(default_factory=list)  # arrived since its last chunk
    audio: AudioTrack | None = None  # streamed audio input, lined up with chunks by media time
    opened_at: float = 0.0  # engine clock when it was opened (a live audio stream's first deadline)
    frames_out: int = 0  # video frames the model made so far (its next chunk starts at model frame frames_out)
    # live audio streams: frames of media time skipped at resumes after a pause (the media time of a
    # chunk's frame = model frame + media_offset; the client's audio clock went on while paused)
    media_offset: int = 0
    realign: bool = False  # resumed after a pause: its next tick skips the media time the player stalled
    stalled_s: float = 0.0  # live audio streams: stall time (under a frame) not yet jumped over


class Engine:
    """Owns the generator and its device loop thread."""

    def __init__(self, generator: StreamingModel, *, max_sessions: int, max_running_jobs: int, lead_margin_s: float,
                 max_lead_s: float, metrics: Metrics | None = None, clock: Callable[[], float] = time.monotonic):
        self.gen = generator
        self.max_sessions = max_sessions
        self.max_running_jobs = max_running_jobs
        self.lead_margin_s = lead_margin_s  # live chunks land this long before their player needs them
        self.max_lead_s = max_lead_s  # default bound on a live stream's lead (a session may ask for more)
        self.metrics = metrics
        self.clock = clock
        self._step_s = 0.0  # the last step's wall time: how far ahead a step takes streams falling due
        self._streams: list[EngineStream] = []  # opened, not closed (device-thread view)
        self._reserved_live = 0  # live streams admitted (opening or open)
        self._reserved_jobs = 0  # job streams admitted
        self._commands: deque[Callable[[], None]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        info = generator.info
        self.audio_rate = model_audio_rate(info)  # the PCM rate the model's audio input takes
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
        conditioning: Conditioning,
        *,
        live: bool,
        on_chunk: Callable[[Chunk, float], None],
        on_error: Callable[[str], None],
        max_lead_s: float | None = None,
        resume: Any = None,
        audio: AudioFormat | None = None,
        audio_window_s: float = 10.0,
        audio_preload: bytes = b"",
        audio_start_s: float = 0.0,
    ) -> Future:
        """Future[EngineStream]. Raises EngineCapacityError / EngineStopped at once when full.
        A live stream is paced to real time with at most `max_lead_s` (default: the engine's) of lead.

        audio: the PCM format of the stream's audio input (its Conditioning declares "audio"); up to
        `audio_window_s` of it past what the model has heard is buffered, the rest dropped;
        `audio_preload`: PCM from media time `audio_start_s` that is there before the first chunk (a
        job's audio); `audio_start_s`: where the stream's audio track starts (a resumed stream's model
        has heard the audio before it, its ResumeState carries that audio; the model is fed from here).

        resume: continue a stream instead of starting one: a `models.ResumeState`, or uint8 frames
        `[T, H, W, 3]` of a clip made elsewhere (its last frames become the context)."""
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
        stream = EngineStream(live=live, on_chunk=on_chunk, on_error=on_error, opened_at=self.clock())
        if audio is not None:
            stream.audio = AudioTrack(audio, self.audio_rate, max_ahead_s=audio_window_s, start_s=audio_start_s)
            stream.audio.put(round(audio_start_s * 1e6), audio_preload)
        if live:
            stream.pacer = Pacer(self.gen.info.fps, margin_s=self.lead_margin_s,
                                 max_lead_s=self.max_lead_s if max_lead_s is None else max_lead_s)

        def do_open() -> EngineStream:
            try:
                if resume is None:
                    stream.state = self.gen.open(conditioning)
                elif hasattr(resume, "latents"):  # a ResumeState
                    stream.state = self.gen.resume_stream(conditioning.prompt, resume, inputs=conditioning.inputs)
                else:  # frames of a clip: its last frames become the context
                    stream.state = self.gen.resume_stream(conditioning.prompt, self.gen.context_state(
                        resume, seed=conditioning.seed, prompt=conditioning.prompt), inputs=conditioning.inputs)
            except BaseException:
                self._release(stream)
                raise
            self._streams.append(stream)
            return stream

        return self._submit(do_open)

    def set_prompt(self, stream: EngineStream, prompt: str, transition_chunks: int,
                   on_applied: Callable[[UpdateApplied], None] | None = None, cut: bool = False) -> None:
        """New prompt from the stream's next generated chunk; `on_applied` runs on the device thread.
        `cut`: a scene cut (models/generator.py `set_prompt`); BadRequestError where it cannot be."""
        try:
            check_prompt_switch(self.gen.info, transition_chunks, cut)
        except ValueError as exc:
            raise BadRequestError(str(exc)) from None
        with self._cond:
            position = stream.pacer.clock.position(self.clock()) if stream.pacer else 0.0
            stream.pending_prompts.append((prompt, transition_chunks, cut, on_applied, position))
            self._cond.notify_all()

    def feed(self, stream: EngineStream, piece: ChunkInput) -> None:
        """A per-chunk input for the stream's next chunk (any thread). Audio goes on the stream's
        track by its media time (BadRequestError if it is not whole samples)."""
        with self._cond:
            if piece.kind == "audio" and stream.audio is not None:
                # a paused live stream keeps the newest audio (its resume skips to it), not the oldest
                pacer = stream.pacer
                stream.audio.put(piece.media_time_us, piece.data,
                                 make_room=stream.paused and pacer is not None and pacer.clock.started)
                self._cond.notify_all()  # the audio a waiting stream needs may be here now
            else:
                stream.pending_inputs.append(piece)

    def pause(self, stream: EngineStream) -> None:
        stream.paused = True

    def resume(self, stream: EngineStream) -> None:
        with self._cond:
            if stream.paused and stream.pacer:
                stream.pacer.clock.resync()  # its viewer waited on purpose: not an underrun
                stream.realign = stream.audio is not None  # its audio's media time went on meanwhile
            stream.paused = False
            self._cond.notify_all()

    def snapshot(self, stream: EngineStream) -> Future:
        """Future[ResumeState] of the stream, taken between ticks; the stream is paused first, so
        every chunk delivered before the future resolves is covered by the snapshot."""

        def take() -> Any:
            stream.paused = True
            return self.gen.snapshot(stream.state)

        return self._submit(take)

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
        # whoever still holds the stream object must not keep its tensors (decoder cache, text
        # K/V) or its owner (the callbacks are bound methods of a session or job) alive
        stream.state = None
        stream.on_chunk, stream.on_error = _ignore_chunk, _ignore_error
        stream.pending_prompts.clear()

    def _plan(self) -> tuple[list[EngineStream], float | None]:
        """This tick's batch (live streams falling due, then jobs while live ones leave room), or
        ([], when to look again) when nothing is due (None: wait for a command)."""
        runnable = [s for s in self._streams if not s.paused and not s.closing]
        live = [s for s in runnable if s.live]
        jobs = [s for s in runnable if not s.live][:max(self.max_sessions - len(live), 0)]
        picked, wake_at = plan_step(self.clock(), [self._due_at(s) for s in live], bool(jobs), self._step_s)
        batch = [live[i] for i in picked] + jobs
        return batch, wake_at

    def _audio_horizon_s(self, stream: EngineStream) -> float:
        """Media time up to which the model must have heard the audio to make the next chunk
        (StreamingModel.audio_until_us, on the model's timeline, plus the media time skipped)."""
        return self.gen.audio_until_us(stream.state) / 1e6 + stream.media_offset / self.gen.info.fps

    def _skip_paused_time(self, stream: EngineStream) -> None:
        """A live audio stream resumed after a pause that outlasted its lead: the client's audio clock
        went on while the video stood still, so showing the next frame late (as a plain stream does)
        would delay every later word by the pause. Instead the stream's media time skips the stall:
        its next chunk is placed (frames and audio) where its player will be when the chunk lands
        plus the pacing margin (less under a frame), and the model hears the audio of that media time; the audio sent
        while paused is not heard. The skip leaves a gap in `first_frame_index` and in the fMP4
        timeline, as dropped chunks do (docs/PROTOCOL.md, "Audio and video timing")."""
        stream.realign, stream.stalled_s = False, 0.0  # (the skip covers any stall before it)
        clock, fps = stream.pacer.clock, self.gen.info.fps
        if not clock.started:
            return
        lands = self.clock() + stream.pacer.step_s + self.lead_margin_s  # (its audio is there: see _due_at)
        skip = math.floor((lands - clock.start) * fps - clock.frames + 1e-6)  # frames the player passes over
        if skip > 0:
            clock.skip(skip)
            self._move_media_time(stream, skip)

    def _catch_up(self, stream: EngineStream, stall_s: float) -> None:
        """A live audio stream's chunk landed `stall_s` after its player ran dry (an underrun: the
        device did not keep real time): the player waited, so every later word would show that much
        later. The stream's media time instead jumps the stall (whole frames; the rest is kept for the
        next underrun): its next chunk starts past a gap, which the player jumps right after the late
        chunk, as it does a dropped chunk, and the audio-to-screen delay is back to what it was. The
        audio of the jumped media time is not heard (docs/PROTOCOL.md, "Audio and video timing")."""
        stream.stalled_s += stall_s
        fps = self.gen.info.fps
        jump = math.floor(stream.stalled_s * fps + 0.5)
        if jump <= 0:
            return
        stream.stalled_s -= jump / fps
        stream.pacer.clock.jump(jump)
        self._move_media_time(stream, jump)

    def _move_media_time(self, stream: EngineStream, frames: int) -> None:
        """The stream's media time passes over `frames` frames it never makes: its next chunk and the
        audio the model hears for it are those of the later media time (the model's own timeline has no gap)."""
        fps = self.gen.info.fps
        stream.media_offset += frames
        stream.audio.seek((stream.frames_out + stream.media_offset) / fps,
                          model_time_us=stream.frames_out * 1_000_000 // fps)

    def _due_at(self, stream: EngineStream) -> float:
        """When a live stream's next chunk should start. With audio: at its pacing due time once
        the audio it needs has arrived, else at the latest start that still keeps the player fed
        (the missing audio is then silence). The first chunk waits for the audio it reads, and at
        least as much as a full later chunk reads past its first frame (a stream without a start
        image has a short first chunk), plus the pacing margin, or as long as that audio would take
        to arrive in real time: that sets the audio-to-screen delay at which every later chunk finds
        its audio there at its latest start."""
        due = stream.pacer.due_at()
        track = stream.audio
        if track is None:
            return due
        if not stream.pacer.clock.started:
            info = self.gen.info
            wait_s = max(self._audio_horizon_s(stream),
                         (info.chunk_video_frames + info.audio_lookahead_frames) / info.fps) + self.lead_margin_s
            return due if track.received_s >= wait_s else stream.opened_at + wait_s
        if track.received_s >= self._audio_horizon_s(stream):
            return due
        return max(due, stream.pacer.latest_start())

    def _feed_audio(self, stream: EngineStream, inputs: list[ChunkInput]) -> None:
        """Append the audio the next chunk needs (frozen now) to the stream's inputs for the step."""
        start_us, pcm = stream.audio.take(self._audio_horizon_s(stream))
        if pcm:
            inputs.append(ChunkInput("audio", start_us, pcm))

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._commands and not self._stopping:
                    batch, wake_at = self._plan()
                    if batch:
                        break
                    self._cond.wait(None if wake_at is None else max(wake_at - self.clock(), 0.0))
                commands = list(self._commands)
                self._commands.clear()
                stopping = self._stopping
            for command in commands:
                command()
            if stopping:
                break
            batch, _ = self._plan()
            if batch:
                self._tick(batch)
            # the loop waits holding nothing: a finished command (a close) or the last batch would
            # otherwise keep ended streams, and their tensors, alive until the next tick
            commands = command = batch = None
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
                prompt, transition_chunks, cut, on_applied, position = stream.pending_prompts.popleft()
                self.gen.set_prompt(stream.state, prompt, transition_chunks=transition_chunks, cut=cut)
                if stream.pacer:
                    applied = stream.pacer.applied(stream.state.chunk_index, position)
                    if self.metrics:
                        self.metrics.switch_latency.observe(applied.latency_s)
                else:
                    applied = UpdateApplied(stream.state.chunk_index, 0.0, 0.0)
                if on_applied:
                    _call_quietly(on_applied, applied)
        with self._cond:
            inputs = [s.pending_inputs for s in batch]
            for stream, pieces in zip(batch, inputs):
                stream.pending_inputs = []
                if stream.audio is not None:
                    if stream.realign:
                        self._skip_paused_time(stream)
                    self._feed_audio(stream, pieces)
        started = self.clock()
        try:
            chunks = self.gen.step([s.state for s in batch], inputs)
        except Exception:
            # formatted here: a log record holding exc_info keeps the failed step's frames, and
            # with them the batch's stream states and tensors, alive for as long as the record
            log.error("generator step failed for %d stream(s):\n%s", len(batch), traceback.format_exc())
            for stream in batch:
                _call_quietly(stream.on_error, "generation failed")
                self._close_now(stream)
            return
        landed = self.clock()
        elapsed = landed - started
        self._step_s = elapsed
        frames = sum(len(c.frames) for c in chunks)
        if self.metrics:
            self.metrics.step_seconds.observe(elapsed)
            self.metrics.generated_frames.inc(frames)
            self.metrics.generated_fps.set(frames / max(elapsed, 1e-9))
        fps = self.gen.info.fps
        for stream, chunk in zip(batch, chunks):
            if stream.pacer:
                stream.pacer.record_step(elapsed)
                underrun = stream.pacer.delivered(len(chunk.frames), landed)
                if underrun and self.metrics:
                    self.metrics.underruns.inc()
            stream.frames_out += len(chunk.frames)
            if stream.media_offset:  # the chunk's frames on the session's media timeline
                chunk = dataclasses.replace(chunk, first_frame_index=chunk.first_frame_index + stream.media_offset)
            if stream.audio is None:
                _call_quietly(stream.on_chunk, chunk, started)
            else:  # the audio under the chunk's frames, as the model heard it: int16 mono [N]
                first = chunk.first_frame_index
                with self._cond:  # the track is changed under the lock (feed, a paused stream's make_room)
                    audio = stream.audio.output(first / fps, (first + len(chunk.frames)) / fps)
                _call_quietly(stream.on_chunk, chunk, started, audio)
                if stream.pacer and underrun:
                    with self._cond:
                        self._catch_up(stream, stream.pacer.clock.last_stall_s)


def _ignore_chunk(chunk: Any, started: float) -> None:
    """The callback of a closed stream."""


def _ignore_error(message: str) -> None:
    """The error callback of a closed stream."""


def _call_quietly(fn: Callable, *args: Any) -> None:
    """Run a callback; its failure is logged and never stops the device loop."""
    try:
        fn(*args)
    except Exception:
        log.exception("engine callback failed")
