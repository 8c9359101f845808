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
        self.jobs = Gauge("framecast_jobs", "Video jobs by status", ["status"], registry=r)
        for status in JOB_STATUSES:
            self.jobs.labels(status=status)

    def set_job_counts(self, counts: dict[str, int]) -> None:
        for status in JOB_STATUSES:
            self.jobs.labels(status=status).set(counts.get(status, 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
