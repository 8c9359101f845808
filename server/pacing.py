"""Real-time pacing of live streams: a playback clock per stream and the policy that says when its
next chunk is due, so a live session is never more than about one chunk ahead of what its viewer
sees (a prompt switch then shows within about one chunk) and spare device time goes elsewhere.

Nothing here reads the wall clock: every method takes `now` (`time.monotonic()` seconds in the
engine, a fake clock in the tests).

    lead(now) = frames delivered / fps - (now - start)       video the player holds, s

A stream's next chunk should land `margin_s` before the player runs dry, so it is due to start
when the lead has fallen to `step_s + margin_s` (`step_s`: the measured time of the steps it took
part in, capped at one chunk - margin). A session that buffers on purpose (`max_lead_s` above one chunk + margin) is instead
filled up to `max_lead_s`: due when the lead falls to `max_lead_s - chunk_s + step_s`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

STEP_EMA_WEIGHT = 0.3  # weight of the newest step time in a stream's step-time estimate
RATE_CHUNKS = 8  # achieved FPS is measured over this many most recent chunks
BEHIND_REPORT_INTERVAL_S = 5.0  # at most one `session.behind` event per stream per this many seconds


class PlaybackClock:
    """Where a real-time player of one stream is: it starts at the first chunk, shows `fps` frames
    a second, and when it runs out of frames it waits (an underrun) and goes on from the next chunk."""

    def __init__(self, fps: float):
        self.fps = fps
        self.start: float | None = None  # when frame 0 is shown; moved later by each stall
        self.frames = 0  # frames delivered
        self.underruns = 0  # chunks that arrived after the player had run dry
        self.last_stall_s = 0.0  # how long the player waited before the latest chunk (0: it did not)
        self._resync = False  # the next stall is intended (resume after pause): not an underrun
        self._skipped: deque[tuple[int, int]] = deque()  # (first frame, count) of skips not yet passed
        self._skipped_passed = 0  # frames of skips the player has passed

    @property
    def started(self) -> bool:
        return self.start is not None

    def lead(self, now: float) -> float:
        """Seconds of delivered video not yet shown; negative while the player waits for frames."""
        if self.start is None:
            return 0.0
        return self.frames / self.fps - (now - self.start)

    def position(self, now: float) -> float:
        """Seconds of video shown so far (media time of the frame on screen)."""
        if self.start is None:
            return 0.0
        return min(max(now - self.start, 0.0), self.frames / self.fps)

    def played_frames(self, now: float) -> float:
        """Frames the player has shown: its position, less the frames it passed over (skips and jumps)."""
        shown = self.position(now) * self.fps
        while self._skipped and self._skipped[0][0] + self._skipped[0][1] <= shown:
            self._skipped_passed += self._skipped.popleft()[1]
        partial = sum(min(max(shown - first, 0), n) for first, n in self._skipped)
        return shown - self._skipped_passed - partial

    def deliver(self, frames: int, now: float) -> bool:
        """A chunk of `frames` arrived at `now`; True when it came after the player ran dry."""
        underrun = False
        if self.start is None:
            self.start = now
        else:
            lead = self.lead(now)
            self.last_stall_s = max(-lead, 0.0)
            if lead < 0:  # the player waited -lead seconds: it shows this chunk from now
                self.start -= lead
                underrun = not self._resync
                self.underruns += underrun
        self._resync = False
        self.frames += frames
        return underrun

    def align(self, frame_index: int, at: float) -> None:
        """Frame `frame_index` left for the viewer at `at` (after encoding and queueing): its player
        cannot have shown it earlier, so it started (or resumed) late. Only ever moves the start later."""
        if self.start is not None and self.start + frame_index / self.fps < at:
            self.start = at - frame_index / self.fps

    def skip(self, frames: int) -> None:
        """The stream's media time passes over `frames` frames it will never deliver (a live audio
        stream resumed after a pause): its clock passes over them (they are not counted as played),
        so the next chunk plays on the same clock, with no stall."""
        self._skipped.append((self.frames, frames))
        self.frames += frames

    def jump(self, frames: int) -> None:
        """The player jumps over `frames` frames the stream will never deliver, at once (a live audio
        stream catching up after an underrun: the gap in its timeline takes no time to play), so
        frame n is shown `frames / fps` earlier than before the jump."""
        self.skip(frames)
        if self.start is not None:
            self.start -= frames / self.fps

    def resync(self) -> None:
        """The stream was paused on purpose: its next stall is not counted as an underrun."""
        self._resync = True


@dataclass
class PacingStats:
    """One stream's pacing, as the `stats` event and /metrics report it."""

    lead_s: float  # delivered video not yet shown (0 while the player waits)
    max_lead_s: float  # the stream's bound
    played_frames: float  # frames a real-time player has shown
    underruns: int  # times a chunk arrived after the player ran dry
    last_switch_s: float | None  # media time of the last applied update minus the play position when it arrived
    step_s: float  # estimated time of one generation step for this stream
    achieved_fps: float  # frames delivered per second over the last RATE_CHUNKS chunks


@dataclass
class UpdateApplied:
    """What the engine tells a session when its `session.update` is applied."""

    chunk_index: int  # the first chunk generated under the new prompt
    media_time_s: float  # when that chunk's first frame is shown, seconds from the stream's start
    latency_s: float  # media_time_s minus the play position when the update arrived


class Pacer:
    """The pacing of one live stream: its playback clock, its step-time estimate and its due time."""

    def __init__(self, fps: float, *, margin_s: float, max_lead_s: float):
        self.clock = PlaybackClock(fps)
        self.margin_s = margin_s  # a chunk is meant to land this long before the player needs it
        self.max_lead_s = max_lead_s  # requested bound; the effective one is never below chunk + margin
        self.step_s = 0.0  # EMA of the steps this stream took part in, s
        self.chunk_frames = 0  # frames of the largest chunk delivered so far (the next one's size)
        self.last_switch_s: float | None = None
        self._deliveries: deque[tuple[float, int]] = deque(maxlen=RATE_CHUNKS)  # (time, frames) of recent chunks
        self._behind_reported_at = -math.inf

    @property
    def chunk_s(self) -> float:
        return self.chunk_frames / self.clock.fps

    @property
    def effective_max_lead_s(self) -> float:
        return max(self.max_lead_s, self.chunk_s + self.margin_s)

    def due_at(self) -> float:
        """When the next chunk should start (`-inf` before the first chunk: at once)."""
        clock = self.clock
        if clock.start is None:
            return -math.inf
        # a step that takes most of a chunk cannot be hidden by starting earlier (the stream is at
        # or behind real time): the estimate is capped there so a fast step after slow ones never
        # lands more than about two chunks ahead
        step = min(self.step_s, max(self.chunk_s - self.margin_s, 0.0))
        start_lead = max(self.max_lead_s - self.chunk_s, self.margin_s) + step
        return clock.start + clock.frames / clock.fps - start_lead

    def latest_start(self) -> float:
        """The latest the next chunk may start and still land `margin_s` before the player runs dry
        (a live audio stream waiting for late audio starts then at the latest)."""
        clock = self.clock
        if clock.start is None:
            return -math.inf
        step = min(self.step_s, max(self.chunk_s - self.margin_s, 0.0))
        return clock.start + clock.frames / clock.fps - step - self.margin_s

    def record_step(self, seconds: float) -> None:
        """A step this stream was part of took `seconds`."""
        self.step_s = seconds if self.step_s == 0 else (1 - STEP_EMA_WEIGHT) * self.step_s + STEP_EMA_WEIGHT * seconds

    def delivered(self, frames: int, now: float) -> bool:
        """A chunk landed; True when the player had run dry (an underrun)."""
        self.chunk_frames = max(self.chunk_frames, frames)
        self._deliveries.append((now, frames))
        return self.clock.deliver(frames, now)

    def achieved_fps(self) -> float:
        """Frames delivered per second over the last RATE_CHUNKS chunks (0 with fewer than two)."""
        if len(self._deliveries) < 2:
            return 0.0
        span = self._deliveries[-1][0] - self._deliveries[0][0]
        return sum(n for _, n in list(self._deliveries)[1:]) / span if span > 0 else 0.0

    def should_report_behind(self, now: float) -> bool:
        """After an underrun: True at most once per BEHIND_REPORT_INTERVAL_S."""
        if now - self._behind_reported_at < BEHIND_REPORT_INTERVAL_S:
            return False
        self._behind_reported_at = now
        return True

    def applied(self, chunk_index: int, received_position_s: float) -> UpdateApplied:
        """An update that arrived at play position `received_position_s` applies to the next chunk."""
        media_time = self.clock.frames / self.clock.fps
        self.last_switch_s = max(media_time - received_position_s, 0.0)
        return UpdateApplied(chunk_index=chunk_index, media_time_s=media_time, latency_s=self.last_switch_s)

    def stats(self, now: float) -> PacingStats:
        return PacingStats(
            lead_s=max(self.clock.lead(now), 0.0), max_lead_s=self.effective_max_lead_s,
            played_frames=self.clock.played_frames(now), underruns=self.clock.underruns,
            last_switch_s=self.last_switch_s, step_s=self.step_s, achieved_fps=self.achieved_fps(),
        )


def plan_step(now: float, due_times: list[float], jobs_waiting: bool, step_s: float) -> tuple[list[int], float | None]:
    """Which live streams the next step takes, or when to look again.

    `due_times[i]`: when live stream i's next chunk is due. A step runs when some stream is due or
    a job waits (jobs are unpaced); it takes every stream that would fall due before the step
    (`step_s` long) finishes, since waiting for the next one would make them late. Returns (indices
    of the streams to step, None), or ([], the earliest due time) when the device should idle
    (([], None): nothing at all to do).
    """
    due_now = any(t <= now for t in due_times)
    if due_now or jobs_waiting:
        return [i for i, t in enumerate(due_times) if t <= now + step_s], None
    return [], min(due_times, default=None)
