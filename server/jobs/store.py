"""The job store interface: what the server needs from any backend (SQLite embedded, Redis shared).

A job is one `POST /v1/videos` request. Status moves queued -> in_progress -> completed | failed,
and any non-terminal status may become cancelled. Implementations must make `claim_next` atomic
(two workers never claim the same job) and `update(..., only_if=...)` a compare-and-set.
"""

from __future__ import annotations

import abc
import dataclasses
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from server.jobs.conditioning import JobConditioning

TERMINAL = ("completed", "failed", "cancelled")


@dataclass
class Job:
    """One video job, as stored."""

    id: str  # "video_<hex>"
    conditioning: JobConditioning  # prompt, seed, start image and any other input of the job's stream
    seconds: float  # requested duration
    model: str  # model name that renders it
    status: str = "queued"  # queued | in_progress | completed | failed | cancelled
    progress: int = 0  # percent, 0..100
    created_at: int = field(default_factory=lambda: int(time.time()))  # unix seconds
    completed_at: int | None = None
    error: str | None = None  # reason for failed/cancelled
    attempts: int = 0  # times it was claimed (an interrupted run counts)
    size: str = ""  # "WxH"
    remixed_from_video_id: str | None = None  # remix: the job whose seed, length and image this reuses
    extends_video_id: str | None = None  # extension of a finished job: resumes from its saved stream state
    upload: str | None = None  # extension of an uploaded clip: its file name under the data dir's uploads/
    source_seconds: float = 0.0  # extension: seconds of the stitched video that come from the source

    @staticmethod
    def new_id() -> str:
        return "video_" + uuid.uuid4().hex

    def uploads(self) -> list[str]:
        """Its files under the data dir's uploads/: the clip it extends and its conditioning's files."""
        return [name for name in (self.upload, *self.conditioning.files.values()) if name]


def job_record(job: Job) -> dict[str, object]:
    """The job as a store keeps it: one value per field, the conditioning as its JSON string."""
    record = {f.name: getattr(job, f.name) for f in dataclasses.fields(Job)}
    record["conditioning"] = job.conditioning.to_json()
    return record


def job_from_record(record: Mapping[str, object]) -> Job:
    """Inverse of `job_record` (fields missing from `record` take their defaults)."""
    names = {f.name for f in dataclasses.fields(Job)}
    values = {k: v for k, v in record.items() if k in names}
    values["conditioning"] = JobConditioning.from_json(values["conditioning"])
    return Job(**values)


class JobStore(abc.ABC):
    """Persistent job records. All methods are safe to call from any thread."""

    @abc.abstractmethod
    def create(self, job: Job) -> Job:
        """Insert a new job (status queued)."""

    @abc.abstractmethod
    def get(self, job_id: str) -> Job | None:
        """The job, or None."""

    @abc.abstractmethod
    def list(self, *, after: str | None = None, limit: int = 20, newest_first: bool = True) -> tuple[list[Job], bool]:
        """Newest first (or oldest first); `after` is the id of the last job of the previous page.
        (jobs, has_more)."""

    @abc.abstractmethod
    def update(self, job_id: str, *, only_if: tuple[str, ...] | None = None, **fields) -> Job | None:
        """Set fields (status, progress, error, completed_at); when `only_if` is given, only if the
        current status is one of those. Returns the updated job, or None if unchanged/missing.
        `only_if=("in_progress",)` is the claiming worker's own write: a shared store applies it
        only while this worker still holds the claim (see `heartbeat`)."""

    @abc.abstractmethod
    def delete(self, job_id: str) -> bool:
        """Remove the job record (whatever its status); False if there was none."""

    @abc.abstractmethod
    def claim_next(self) -> Job | None:
        """Atomically move the oldest queued job to in_progress (attempts + 1) and return it."""

    @abc.abstractmethod
    def heartbeat(self, job_id: str) -> bool:
        """Renew this worker's claim on a job it runs (the runner calls it about once a second).
        False when the job is no longer this worker's (cancelled, finished, or re-queued after the
        claim expired); a store shared by processes re-queues jobs whose claim is not renewed."""

    @abc.abstractmethod
    def recover(self, *, max_attempts: int) -> list[Job]:
        """On startup: jobs left in_progress by a dead process go back to queued, or to failed
        (with a reason) once they used `max_attempts`. Returns the jobs it changed."""

    @abc.abstractmethod
    def count_by_status(self) -> dict[str, int]:
        """{status: number of jobs}."""

    def close(self) -> None:
        """Release connections."""
