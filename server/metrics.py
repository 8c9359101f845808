"""Prometheus series for one app, on its own registry (several apps may live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
JOB_STATUSES = ("queued", "in_progress", "completed", "failed", "cancelled")


class Metrics:
    """The named series of DESIGN.md's `/metrics`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active_sessions = Gauge("framecast_active_sessions", "Live realtime sessions", registry=r)
        self.time_to_first_frame = Histogram(
            "framecast_time_to_first_frame_seconds", "session.start to first chunk sent",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.chunk_latency = Histogram(
            "framecast_chunk_latency_seconds", "Start of a chunk's generation to its send",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.step_seconds = Histogram(
            "framecast_step_seconds", "Wall time of one batched generator step", buckets=LATENCY_BUCKETS, registry=r
        )
        self.generated_frames = Counter("framecast_generated_frames", "Video frames generated", registry=r)
        self.generated_fps = Gauge("framecast_generated_fps", "Frames generated per second (last tick)", registry=r)
        self.send_queue_depth = Gauge("framecast_send_queue_depth", "Chunks waiting in send queues", registry=r)
        self.dropped_chunks = Counter("framecast_dropped_chunks", "Chunks dropped for slow readers", registry=r)
        self.refused_messages = Counter("framecast_refused_messages", "Client messages answered with an error",
                                        registry=r)
        self.throttled_reads = Counter("framecast_throttled_reads",
                                       "Times a socket was left unread because its client's refusal budget was spent",
                                       registry=r)
        self.underruns = Counter("framecast_underruns", "Live chunks that landed after the viewer ran dry", registry=r)
        self.switch_latency = Histogram(
            "framecast_switch_latency_seconds", "session.update arrival to the media time it shows at",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        # one series per live session (label `session`), set from its stats and removed when it ends;
        # keys are the `stats` event's fields
        self.session_series = {
            key: Gauge(name, help_text, ["session"], registry=r) for key, name, help_text in (
                ("lead_s", "framecast_session_lead_seconds", "Video delivered ahead of the real-time player, s"),
                ("last_switch_s", "framecast_session_last_switch_seconds", "Switch-to-screen latency of the last update, s"),
                ("generated_fps", "framecast_session_generated_fps", "Frames generated per second"),
                ("played_fps", "framecast_session_played_fps", "Frames a real-time player showed per second"),
                ("underruns", "framecast_session_underruns", "Times the session's player ran dry"),
            )
        }
        self.jobs = Gauge("framecast_jobs", "Video jobs by status", ["status"], registry=r)
        for status in JOB_STATUSES:
            self.jobs.labels(status=status)

    def set_job_counts(self, counts: dict[str, int]) -> None:
        for status in JOB_STATUSES:
            self.jobs.labels(status=status).set(counts.get(status, 0))

    def set_session(self, session_id: str, stats: dict) -> None:
        """The per-session series from a `stats` event (fields that are None stay unset)."""
        for key, gauge in self.session_series.items():
            if stats.get(key) is not None:
                gauge.labels(session=session_id).set(stats[key])

    def forget_session(self, session_id: str) -> None:
        for gauge in self.session_series.values():
            try:
                gauge.remove(session_id)
            except KeyError:
                pass

    def render(self) -> bytes:
        return generate_latest(self.registry)
