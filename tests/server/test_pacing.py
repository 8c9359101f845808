"""server/pacing.py on a fake clock: the playback clock, the due-time policy, and a simulated
device loop built from the same `plan_step` the engine uses (no wall time anywhere)."""

import math
import random

import pytest

from server.pacing import BEHIND_REPORT_INTERVAL_S, Pacer, PlaybackClock, plan_step

FPS = 16
CHUNK = 12  # frames of a steady chunk (0.75 s)
FIRST = 9  # frames of a stream's first chunk


def test_clock_lead_position_and_underrun_rebase():
    clock = PlaybackClock(FPS)
    assert clock.lead(5.0) == 0.0 and clock.position(5.0) == 0.0 and not clock.started
    assert clock.deliver(16, now=10.0) is False  # 1 s of video; the player starts now
    assert clock.lead(10.25) == pytest.approx(0.75)
    assert clock.position(10.25) == pytest.approx(0.25)
    assert clock.deliver(8, now=10.5) is False  # in time: lead 0.5 + 0.5
    assert clock.lead(10.5) == pytest.approx(1.0)
    assert clock.position(12.0) == pytest.approx(1.5)  # ran dry at 11.5 and waits on the last frame
    assert clock.lead(12.0) == pytest.approx(-0.5)
    assert clock.deliver(16, now=12.0) is True  # late: an underrun; playback goes on from now
    assert clock.underruns == 1
    assert clock.lead(12.0) == pytest.approx(1.0) and clock.position(12.0) == pytest.approx(1.5)
    assert clock.played_frames(12.5) == pytest.approx(2.0 * FPS)


def test_player_cannot_show_a_frame_before_it_was_sent():
    clock = PlaybackClock(FPS)
    clock.align(0, 1.0)  # nothing delivered yet: nothing to align
    assert not clock.started
    clock.deliver(16, now=10.0)
    clock.align(0, 10.3)  # encoding and sending the first chunk took 0.3 s: the player starts then
    assert clock.lead(10.3) == pytest.approx(1.0)
    clock.align(0, 9.0)  # never earlier
    clock.deliver(16, now=10.5)
    clock.align(16, 11.0)  # frame 16 was due at 11.3: sent in time, nothing moves
    assert clock.lead(11.0) == pytest.approx(1.3)
    clock.align(16, 11.8)  # sent 0.5 s after it was due: the player waited for it
    assert clock.position(11.8) == pytest.approx(1.0) and clock.lead(11.8) == pytest.approx(1.0)


def test_a_slow_step_estimate_is_capped_at_one_chunk():
    pacer = Pacer(FPS, margin_s=0.25, max_lead_s=1.0)
    pacer.record_step(3.0)  # far slower than real time
    pacer.delivered(CHUNK, now=0.0)
    # it starts once the lead is one chunk (not 3 s + margin), so a fast step lands < 2 chunks ahead
    assert pacer.clock.lead(pacer.due_at()) == pytest.approx(CHUNK / FPS)


def test_resync_after_pause_is_not_an_underrun():
    clock = PlaybackClock(FPS)
    clock.deliver(16, now=0.0)
    clock.resync()
    assert clock.deliver(16, now=5.0) is False and clock.underruns == 0
    assert clock.lead(5.0) == pytest.approx(1.0)
    assert clock.deliver(16, now=10.0) is True  # the resync covered one stall only


def test_played_frames_leave_out_skipped_and_jumped_media_time():
    """`stats.played_fps` counts frames shown, not the media time a live audio stream passed over."""
    clock = PlaybackClock(FPS)
    clock.deliver(16, now=0.0)
    clock.resync()
    clock.skip(32)  # resumed after a pause: the player passes over 2 s it will never get
    clock.deliver(16, now=2.0)
    assert clock.played_frames(1.0) == pytest.approx(16)
    assert clock.played_frames(2.5) == pytest.approx(16)  # passing the skipped 2 s shows nothing
    assert clock.played_frames(3.5) == pytest.approx(16 + 8)
    assert clock.deliver(16, now=5.0) is True and clock.last_stall_s == pytest.approx(1.0)
    assert clock.lead(5.0) == pytest.approx(1.0)
    clock.jump(16)  # an underrun caught up: the gap takes no time to play, the lead is unchanged
    assert clock.lead(5.0) == pytest.approx(1.0)
    assert clock.played_frames(6.0) == pytest.approx(16 + 16 + 16)
    assert clock.frames == 16 + 32 + 16 + 16 + 16


def test_default_stream_is_due_when_lead_falls_to_step_time_plus_margin():
    pacer = Pacer(FPS, margin_s=0.25, max_lead_s=1.0)
    assert pacer.due_at() == -math.inf  # the first chunk starts at once
    pacer.record_step(0.2)
    pacer.delivered(FIRST, now=100.0)
    pacer.record_step(0.2)
    pacer.delivered(CHUNK, now=100.4)  # lead: 21/16 - 0.4 = 0.9125
    due = pacer.due_at()
    assert pacer.clock.lead(due) == pytest.approx(0.25 + 0.2)  # margin + step time
    # started then, the chunk lands `margin` before the player needs it, with one chunk + margin of lead
    assert pacer.clock.lead(due + 0.2) + CHUNK / FPS == pytest.approx(1.0)


def test_buffering_stream_is_filled_up_to_its_max_lead():
    pacer = Pacer(FPS, margin_s=0.25, max_lead_s=5.0)
    pacer.record_step(0.2)
    pacer.delivered(CHUNK, now=0.0)
    due = pacer.due_at()
    assert pacer.clock.lead(due + 0.2) + CHUNK / FPS == pytest.approx(5.0)
    assert due < 0.0  # it is due at once: its lead is far below 5 s
    assert pacer.effective_max_lead_s == 5.0


def test_max_lead_below_one_chunk_still_keeps_the_margin():
    pacer = Pacer(FPS, margin_s=0.25, max_lead_s=0.1)
    pacer.record_step(0.1)
    pacer.delivered(CHUNK, now=0.0)
    assert pacer.clock.lead(pacer.due_at()) == pytest.approx(0.35)
    assert pacer.effective_max_lead_s == pytest.approx(CHUNK / FPS + 0.25)


def test_step_time_estimate_is_a_moving_average():
    pacer = Pacer(FPS, margin_s=0.25, max_lead_s=1.0)
    pacer.record_step(1.0)
    assert pacer.step_s == 1.0
    for _ in range(30):
        pacer.record_step(0.1)
    assert pacer.step_s == pytest.approx(0.1, abs=1e-3)


def test_update_latency_is_media_time_of_next_chunk_minus_play_position():
    pacer = Pacer(FPS, margin_s=0.25, max_lead_s=1.0)
    pacer.delivered(FIRST, now=0.0)
    pacer.delivered(CHUNK, now=0.3)
    position = pacer.clock.position(0.6)  # the update arrives at 0.6 s of play
    applied = pacer.applied(chunk_index=2, received_position_s=position)
    assert applied.chunk_index == 2
    assert applied.media_time_s == pytest.approx(21 / FPS)  # the next chunk's first frame
    assert applied.latency_s == pytest.approx(21 / FPS - 0.6) == pacer.last_switch_s


def test_achieved_fps_and_behind_reports_are_rate_limited():
    pacer = Pacer(FPS, margin_s=0.25, max_lead_s=1.0)
    assert pacer.achieved_fps() == 0.0
    for i in range(10):
        pacer.delivered(CHUNK, now=i * 1.5)  # a 0.75 s chunk every 1.5 s: half real time
    assert pacer.achieved_fps() == pytest.approx(CHUNK / 1.5)
    assert pacer.clock.underruns == 9
    assert pacer.should_report_behind(20.0) is True
    assert pacer.should_report_behind(20.0 + BEHIND_REPORT_INTERVAL_S / 2) is False
    assert pacer.should_report_behind(20.0 + BEHIND_REPORT_INTERVAL_S) is True


def test_plan_step_idles_until_the_earliest_due_time():
    assert plan_step(10.0, [], False, 0.2) == ([], None)
    assert plan_step(10.0, [11.0, 10.5], False, 0.2) == ([], 10.5)
    # one due: it goes, with every stream falling due before the step ends
    assert plan_step(10.0, [9.9, 10.1, 10.5], False, 0.2) == ([0, 1], None)
    # a waiting job runs the device now (jobs are unpaced) and takes along streams about to fall due
    assert plan_step(10.0, [10.1, 12.0], True, 0.2) == ([0], None)
    assert plan_step(10.0, [-math.inf], False, 0.0) == ([0], None)


class SimDevice:
    """The engine's loop on a fake clock: `plan_step` picks each batch, a step of n streams takes
    `step_time(n)` seconds, the device idles until the next due time otherwise."""

    def __init__(self, step_time, starts, max_leads=None, margin_s=0.25, jobs=False):
        self.step_time = step_time
        self.starts = starts  # when each session opens
        self.pacers = [Pacer(FPS, margin_s=margin_s, max_lead_s=(max_leads or {}).get(i, 1.0))
                       for i in range(len(starts))]
        self.chunks = [0] * len(starts)
        self.jobs = jobs
        self.busy_s = 0.0
        self.last_step = 0.0
        self.leads: list[list[tuple[float, float]]] = [[] for _ in starts]  # (time, lead right after a chunk)

    def run(self, until: float, on_time=None):
        now = 0.0
        while now < until:
            open_ = [i for i, t in enumerate(self.starts) if t <= now]
            if on_time:
                on_time(self, now)
            picked, wake_at = plan_step(now, [self.pacers[i].due_at() for i in open_], self.jobs, self.last_step)
            if not picked and not self.jobs:
                later = [t for t in self.starts if t > now]
                now = min([x for x in [wake_at, *later] if x is not None], default=until)
                continue
            batch = [open_[i] for i in picked]
            elapsed = self.step_time(len(batch) + self.jobs)
            now += elapsed
            self.busy_s += elapsed
            self.last_step = elapsed
            for i in batch:
                frames = FIRST if self.chunks[i] == 0 else CHUNK
                self.chunks[i] += 1
                self.pacers[i].record_step(elapsed)
                self.pacers[i].delivered(frames, now)
                self.leads[i].append((now, self.pacers[i].clock.lead(now)))
        return self

    def max_lead_after(self, i, t0):
        return max(lead for t, lead in self.leads[i] if t >= self.starts[i] + t0)


def batched(per_step, per_stream):
    return lambda n: per_step + per_stream * n


def test_one_fast_session_keeps_real_time_with_a_bounded_lead_and_an_idle_device():
    sim = SimDevice(batched(0.05, 0.07), starts=[0.0]).run(60.0)
    pacer = sim.pacers[0]
    assert pacer.clock.underruns == 0
    assert sim.max_lead_after(0, 3.0) <= 1.0 + 1e-9  # one chunk + margin
    assert min(lead for t, lead in sim.leads[0] if t > 3.0) >= 0.75  # every chunk landed >= margin early
    assert pacer.clock.frames / FPS == pytest.approx(60.0, abs=1.0)  # generated ~ real time, no backlog
    assert sim.busy_s < 0.25 * 60.0  # the device idles the rest


def test_four_sessions_are_batched_and_all_keep_real_time():
    rng = random.Random(0)
    starts = [rng.uniform(0, 2.0) for _ in range(4)]
    sim = SimDevice(batched(0.05, 0.05), starts=starts).run(60.0)
    for i in range(4):
        assert sim.pacers[i].clock.underruns == 0
        assert sim.max_lead_after(i, 3.0) <= 1.0 + sim.step_time(4) + 1e-9  # + the pull-in of one step
        played = sim.pacers[i].clock.played_frames(60.0) / (60.0 - starts[i])
        assert played == pytest.approx(FPS, rel=0.02)
    steps = sim.busy_s / sim.step_time(4)
    assert steps < 1.5 * (60.0 / 0.75)  # mostly one batched step per chunk period, not one per session


def test_device_slower_than_real_time_counts_underruns_and_keeps_the_lead_bounded():
    sim = SimDevice(batched(0.0, 1.5), starts=[0.0]).run(60.0)  # a 0.75 s chunk takes 1.5 s
    pacer = sim.pacers[0]
    assert pacer.clock.underruns >= 35
    assert pacer.achieved_fps() == pytest.approx(CHUNK / 1.5)
    assert sim.max_lead_after(0, 3.0) <= CHUNK / FPS + 1e-9  # no backlog either
    assert sim.busy_s == pytest.approx(60.0, abs=1.5)  # the device never idles while behind


def test_a_session_asking_for_more_lead_gets_it_and_others_keep_theirs():
    sim = SimDevice(batched(0.05, 0.07), starts=[0.0, 0.0], max_leads={1: 5.0}).run(30.0)
    assert sim.max_lead_after(0, 3.0) <= 1.0 + sim.step_time(2) + 1e-9
    assert 4.5 <= sim.max_lead_after(1, 3.0) <= 5.0 + sim.step_time(2) + 1e-9
    assert min(lead for t, lead in sim.leads[1] if t > 10.0) >= 4.0


def test_jobs_run_unpaced_beside_a_paced_session():
    sim = SimDevice(batched(0.05, 0.07), starts=[0.0], jobs=True).run(30.0)
    assert sim.busy_s == pytest.approx(30.0, abs=0.5)  # the job keeps the device busy
    assert sim.pacers[0].clock.underruns == 0
    assert sim.max_lead_after(0, 3.0) <= 1.0 + sim.step_time(2) + 1e-9


def test_switch_latency_at_random_moments_stays_within_one_chunk_plus_margin():
    rng = random.Random(1)
    moments = sorted(rng.uniform(3.0, 58.0) for _ in range(20))
    latencies = []

    def maybe_switch(sim, now):
        while moments and moments[0] <= now:  # the update reached the server at moments[0]
            pacer = sim.pacers[0]
            latencies.append(pacer.applied(0, pacer.clock.position(moments.pop(0))).latency_s)

    SimDevice(batched(0.05, 0.07), starts=[0.0]).run(60.0, on_time=maybe_switch)
    assert len(latencies) == 20
    assert max(latencies) <= 1.0 + 1e-9 and sorted(latencies)[10] <= 0.8
