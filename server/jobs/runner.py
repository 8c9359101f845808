"""Runs queued video jobs through the engine (as non-live streams) and writes their MP4s.

The runner claims a job whenever the engine has a free job slot, opens a stream, writes each chunk
to the MP4 (on the encoder pool, off the device loop), updates progress per chunk, and publishes
the file atomically, with its stills and the stream's ResumeState (an extension resumes from
it, so it costs only the new seconds). An extension's video starts with its source: the source job's video packets,
copied without re-encoding, and the frames its stream made past that video's end; or the
uploaded clip's frames.
Audio jobs (avatar models) keep their audio on the media timeline: the model hears it chunk by
chunk, the MP4 carries it as an AAC track, and the published job saves it beside its resume state
(`JobFiles.audio`, covering the frames its stream made past its video's end too). An extension's
audio is the source's up to the join, then its own audio file (silence without one); the join is
where the source's stream stopped: the source video's end plus the frames its stream had already
made past it (they open the extension and carry the audio they were made with). Its model
continues from the audio buffer in the ResumeState and is fed the new audio from the join on.
DELETE flips the stored status or removes the record; the runner notices at the next chunk. On shutdown a running job goes back to `queued` so the next start renders it again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from concurrent.futures import Executor

import numpy as np

from client.audio_file import decode_audio, wav_bytes
from client.protocol.errors import FramecastError
from models.resume import ResumeState
from server.audio_track import JOB_AUDIO_RATE, AudioFormat
from server.engine import Engine, EngineCapacityError, EngineStopped
from server.images import decode_image_bytes
from server.jobs.files import JobFiles
from server.jobs.store import Job, JobStore
from server.media import decode_clip, write_stills
from server.mp4_writer import Mp4FileWriter

log = logging.getLogger("framecast.jobs")
_MAX_BUFFERED_CHUNKS = 2  # the job's stream is paused while this many chunks wait to be written


class JobRunner:
    """One asyncio task that claims jobs, plus one task per running job."""

    def __init__(self, *, store: JobStore, engine: Engine, pool: Executor, files: JobFiles,
                 width: int, height: int, fps: int, max_image_bytes: int, max_image_pixels: int,
                 max_clip_seconds: float):
        self.store = store
        self.engine = engine
        self.pool = pool
        self.files = files
        self.width, self.height, self.fps = width, height, fps
        self.max_image_bytes, self.max_image_pixels = max_image_bytes, max_image_pixels
        self.max_clip_seconds = max_clip_seconds  # uploaded clips an extension continues
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task] = {}
        # claimed jobs whose engine slot is not reserved yet (their media is still being read and
        # decoded): no further job is claimed until it is, or a worker would claim more jobs than
        # it has room for and hand them back to the queue (each a wasted render attempt)
        self._starting: set[str] = set()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._claim_loop(), name="framecast-job-runner")

    def wake(self) -> None:
        """A job was queued (or a slot freed): look for work now."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop claiming; interrupt running jobs, which go back to `queued`."""
        if self._task:
            self._task.cancel()
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _claim_loop(self) -> None:
        while True:
            try:
                for job_id in list(self._running):  # renew claims: a shared store re-queues unrenewed jobs
                    self.store.heartbeat(job_id)
                while not self._starting and self.engine.has_room_for_job():
                    job = self.store.claim_next()
                    if job is None:
                        break
                    self._starting.add(job.id)
                    task = asyncio.create_task(self._render_guarded(job), name=f"job-{job.id}")
                    self._running[job.id] = task
            except Exception:  # e.g. Redis unreachable: keep the loop alive, retry after the wait
                log.exception("job store error")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass

    async def _render_guarded(self, job: Job) -> None:
        log.info("job %s: rendering (attempt %d)", job.id, job.attempts)
        try:
            await self._render(job)
        except asyncio.CancelledError:
            self.store.update(job.id, only_if=("in_progress",), status="queued", progress=0)
            raise
        except (EngineCapacityError, EngineStopped):
            self.store.update(job.id, only_if=("in_progress",), status="queued", progress=0)
        except Exception as exc:
            log.exception("job %s failed", job.id)
            self.store.update(job.id, only_if=("in_progress",), status="failed", error=f"render failed: {exc}")
        finally:
            self._starting.discard(job.id)
            self._running.pop(job.id, None)
            self.wake()

    async def _prefix(self, job: Job):
        """(frames to write first, resume) for an extension, else (None, None): for a job, the frames
        its stream made past its video's end and its ResumeState (its video's packets are copied as
        they are); for an uploaded clip, its frames, which are also the context to encode."""
        loop = asyncio.get_running_loop()
        if job.extends_video_id:
            source = job.extends_video_id
            if not self.files.video(source).is_file() or not self.files.state(source).is_file():
                raise RuntimeError(f"the source video {source} is gone")
            state = await loop.run_in_executor(self.pool, ResumeState.load, self.files.state(source))
            return state.tail_frames, state
        if job.upload:
            raw = await loop.run_in_executor(self.pool, self.files.upload(job.upload).read_bytes)
            clip = await loop.run_in_executor(self.pool, lambda: decode_clip(
                raw, width=self.width, height=self.height, fps=self.fps, max_seconds=self.max_clip_seconds,
                max_pixels=self.max_image_pixels))
            return clip, clip
        return None, None

    async def _render(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        target = max(1, round(job.seconds * self.fps))  # frames to write
        # the audio is a streamed input, not a Conditioning field: the engine preloads the stream's audio
        # track with it (the model hears it chunk by chunk, as a live session's) and the MP4 carries it
        media = dataclasses.replace(job.conditioning, files={k: v for k, v in job.conditioning.files.items() if k != "audio"})
        conditioning = await loop.run_in_executor(  # media read and decoded off the loop and the device thread
            self.pool, media.decode, self._decoders(), lambda name: self.files.upload(name).read_bytes())
        prefix, resume = await self._prefix(job)
        audio = None  # int16 mono [N] at JOB_AUDIO_RATE from media time 0: heard by the model, muxed into the MP4
        audio_args = {}
        if "audio" in job.conditioning.inputs:
            tail = len(prefix) if job.extends_video_id and prefix is not None else 0
            audio, join = await loop.run_in_executor(self.pool, self._audio_timeline, job, tail)
            audio_args = dict(audio=AudioFormat(JOB_AUDIO_RATE), audio_window_s=job.seconds + 1.0,
                              audio_preload=audio[join:].tobytes(), audio_start_s=join / JOB_AUDIO_RATE)
        chunks: asyncio.Queue = asyncio.Queue()  # Chunk | Exception

        def on_chunk(chunk, _started: float, _audio=None) -> None:  # the MP4 takes the job's audio whole
            loop.call_soon_threadsafe(chunks.put_nowait, chunk)

        def on_error(message: str) -> None:
            loop.call_soon_threadsafe(chunks.put_nowait, RuntimeError(message))

        future = self.engine.open(conditioning, live=False, on_chunk=on_chunk, on_error=on_error, resume=resume,
                                  **audio_args)
        self._starting.discard(job.id)  # its engine slot is reserved: the claim loop may take the next job
        self.wake()
        stream = await asyncio.wrap_future(future)
        source = self.files.video(job.extends_video_id) if job.extends_video_id else None
        writer = await loop.run_in_executor(self.pool, lambda: Mp4FileWriter(
            self.files.video(job.id), width=self.width, height=self.height, fps=self.fps, continue_from=source,
            audio=audio, audio_rate=JOB_AUDIO_RATE))
        pending = [] if prefix is None or not len(prefix) else [prefix]  # frames received, not yet written
        try:
            while True:
                while pending and writer.frames_written < target:
                    frames = pending.pop(0)
                    take = frames[: target - writer.frames_written]  # [T, H, W, 3]
                    await loop.run_in_executor(self.pool, writer.write, take)
                    if len(take) < len(frames):
                        pending.insert(0, frames[len(take):])
                if writer.frames_written >= target:
                    break
                if chunks.qsize() >= _MAX_BUFFERED_CHUNKS:
                    self.engine.pause(stream)
                item = await chunks.get()
                if chunks.qsize() < _MAX_BUFFERED_CHUNKS:
                    self.engine.resume(stream)
                if isinstance(item, Exception):
                    raise item
                pending.append(item.frames)
                progress = min(99, int(100 * writer.frames_written / target))
                if self.store.update(job.id, only_if=("in_progress",), progress=progress) is None:
                    log.info("job %s cancelled", job.id)
                    await loop.run_in_executor(self.pool, writer.abort)
                    return
            state = await asyncio.wrap_future(self.engine.snapshot(stream))
            while not chunks.empty():  # chunks made before the snapshot: they belong to its tail
                item = chunks.get_nowait()
                if not isinstance(item, Exception):
                    pending.append(item.frames)
            self.engine.close(stream)
            if pending:
                state.tail_frames = np.concatenate(pending)
            await loop.run_in_executor(self.pool, self._publish, job, writer, state, audio)
        except BaseException:
            self.engine.close(stream)
            await asyncio.shield(loop.run_in_executor(self.pool, writer.abort))
            raise
        finally:
            self.engine.close(stream)
        done = self.store.update(job.id, only_if=("in_progress",), status="completed", progress=100,
                                 completed_at=int(time.time()))
        if done is None:  # cancelled or deleted meanwhile: nothing of it is kept
            await loop.run_in_executor(self.pool, self.files.remove, job.id, *job.uploads())

    def _decoders(self) -> dict:
        """Medium name (JobConditioning.media) -> its decoder into the Conditioning field of that name."""
        return {"image": functools.partial(decode_image_bytes, max_bytes=self.max_image_bytes,
                                           max_pixels=self.max_image_pixels, size=(self.width, self.height))}

    def _audio_timeline(self, job: Job, tail_frames: int = 0) -> tuple[np.ndarray, int]:
        """(the job's audio on its media timeline, int16 mono at JOB_AUDIO_RATE from frame 0; the
        sample where its own audio starts) (pool thread). A job's own audio is its `audio` file; an
        extension's starts at the join after the source's audio: the audio its job saved (through the
        `tail_frames` its stream made past its video's end, the join), else its file's audio track (an
        uploaded clip's, or a job's from before audio was saved), else silence; without a file of its
        own it goes on in silence."""
        name = job.conditioning.files.get("audio")
        own = np.zeros(0, np.int16)
        if name:
            own = decode_audio(self.files.upload(name).read_bytes(), rate=JOB_AUDIO_RATE,
                               max_seconds=self.max_clip_seconds)
        if not (job.extends_video_id or job.upload):
            return own, 0
        join = round((round(job.source_seconds * self.fps) + tail_frames) * JOB_AUDIO_RATE / self.fps)
        source = np.zeros(join, np.int16)
        saved = self.files.audio(job.extends_video_id) if job.extends_video_id else None
        if saved is not None and saved.is_file():
            path = saved
        else:
            path = self.files.video(job.extends_video_id) if job.extends_video_id else self.files.upload(job.upload)
        try:
            heard = decode_audio(path.read_bytes(), rate=JOB_AUDIO_RATE, max_seconds=self.max_clip_seconds + 1.0)
        except FramecastError:  # no audio track: the source was silent
            heard = source
        source[:min(join, len(heard))] = heard[:join]
        return np.concatenate([source, own]), join

    def _publish(self, job: Job, writer: Mp4FileWriter, state: ResumeState, audio: np.ndarray | None = None) -> None:
        """Write the resume state (and an audio job's audio as its MP4 carries it), publish the video,
        then its stills (pool thread)."""
        state.save(self.files.state(job.id))
        if audio is not None:  # what the stream heard, through the frames it made past the video's end
            frames = writer.frames_written + len(state.tail_frames)
            length = round(frames * JOB_AUDIO_RATE / self.fps)
            track = np.zeros(length, np.int16)
            track[:min(length, len(audio))] = audio[:length]
            partial = self.files.audio(job.id).with_suffix(".partial")
            partial.write_bytes(wav_bytes(track, JOB_AUDIO_RATE))
            partial.replace(self.files.audio(job.id))
        path = writer.finish()
        # a worker that lost this job's lease (killed, or stalled past it) never publishes: its partial goes
        for stale in path.parent.glob(f"{path.name}.*.partial"):
            stale.unlink(missing_ok=True)
        write_stills(path, self.files.variant(job.id, "thumbnail"), self.files.variant(job.id, "spritesheet"))
