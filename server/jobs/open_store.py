"""`open_job_store(settings)`: the Redis store when `FRAMECAST_REDIS_URL` is set, else embedded SQLite."""

from __future__ import annotations

from server.jobs.store import JobStore
from server.settings import Settings


def open_job_store(settings: Settings) -> JobStore:
    """Redis (shared by every worker pointing at it) or SQLite in the data directory (one process)."""
    if settings.redis_url:
        from server.jobs.redis_store import RedisJobStore

        return RedisJobStore(settings.redis_url, lease_s=settings.job_lease_s,
                             max_attempts=settings.job_max_attempts)
    from server.jobs.sqlite_store import SqliteJobStore

    return SqliteJobStore(settings.data_dir / "jobs.sqlite3")
