"""JobStore on Redis: one job queue and one set of job records shared by several server processes.

Used when `FRAMECAST_REDIS_URL` is set (one `framecast serve` per GPU, any number of machines).
Every status change is one Lua script (server/jobs/redis_lua.py), so:
- any worker accepts `POST /v1/videos`; every worker answers `GET` for every job;
- `claim_next` hands each queued job to exactly one worker and gives it a lease of `lease_s`;
  the worker renews it with `heartbeat` while it renders. A worker that dies (or hangs) stops
  renewing; the next `claim_next` on any worker re-queues its job (or fails it after
  `max_attempts` claims) and another worker renders it from the start;
- an `update(..., only_if=("in_progress",))` is the claiming worker's own write (progress,
  completion, failure, re-queue): it applies only while this worker still holds the claim, so a
  worker presumed dead cannot overwrite the job's next run;
- each job keeps its status history (`history(id)`), written by the same scripts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import uuid

from server.jobs import redis_lua
from server.jobs.conditioning import JobConditioning
from server.jobs.store import Job, JobStore, job_from_record, job_record

_UPDATABLE = {"status", "progress", "error", "completed_at"}
_INTS = {"progress", "created_at", "completed_at", "attempts"}
_FLOATS = {"seconds", "source_seconds"}
_FIELDS = [f.name for f in dataclasses.fields(Job)]


def default_worker_id() -> str:
    """host:pid:random, unique per process (also names the worker in each job's history)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _encode(value) -> bytes:
    return repr(value).encode() if isinstance(value, float) else str(value).encode()


def _decode(name: str, raw: bytes):
    if name in _INTS:
        return int(raw)
    if name in _FLOATS:
        return float(raw)
    return raw.decode()


class RedisJobStore(JobStore):
    """Job records, queue and claims in one Redis database (redis-py is thread-safe)."""

    def __init__(self, url: str, *, lease_s: float = 30.0, max_attempts: int = 3, prefix: str = "framecast:",
                 worker_id: str | None = None):
        import redis  # optional dependency: pip install 'framecast[redis]'

        self.lease_ms = max(1, int(lease_s * 1000))
        self.max_attempts = max_attempts
        self.prefix = prefix
        self.worker_id = worker_id or default_worker_id()
        self._redis = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10,
                                           health_check_interval=30, retry_on_timeout=True)
        self._redis.ping()  # fail at startup, not on the first request
        self._keys = [prefix + name for name in ("queue", "leases", "counts", "jobs", "seq")]
        scripts = {name: getattr(redis_lua, name)
                   for name in ("CREATE", "CLAIM", "REAP", "HEARTBEAT", "UPDATE", "DELETE", "MIGRATE")}
        self._scripts = {name: self._redis.register_script(code) for name, code in scripts.items()}
        self._migrate()

    def _migrate(self) -> None:
        """Job hashes written before conditioning was one field (prompt, seed, image) get it. Each
        hash changes in one script, so workers starting together merge it once."""
        ids = self._redis.zrange(self.prefix + "jobs", 0, -1)
        pipe = self._redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(self._key(job_id.decode()), "conditioning", "prompt", "seed", "image")
        for job_id, (stored, prompt, seed, image) in zip(ids, pipe.execute()):
            if stored is None and prompt is not None:
                merged = JobConditioning.from_legacy(prompt.decode(), None if seed is None else int(seed), image)
                self._run("MIGRATE", job_id.decode(), merged.to_json())

    def _run(self, script: str, *args) -> object:
        return self._scripts[script](keys=self._keys, args=[self.prefix, *args])

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    @staticmethod
    def _job(raw: dict[bytes, bytes]) -> Job | None:
        if not raw:
            return None
        fields = {k.decode(): v for k, v in raw.items()}
        return job_from_record({name: _decode(name, fields[name]) for name in _FIELDS if name in fields})

    def create(self, job: Job) -> Job:
        pairs: list[bytes | str] = []
        for name, value in job_record(job).items():
            if value is not None:
                pairs += [name, _encode(value)]
        self._run("CREATE", job.id, *pairs)
        return job

    def get(self, job_id: str) -> Job | None:
        return self._job(self._redis.hgetall(self._key(job_id)))

    def _get_many(self, ids: list[bytes]) -> list[Job]:
        pipe = self._redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self._key(job_id.decode()))
        return [job for job in map(self._job, pipe.execute()) if job is not None]

    def list(self, *, after: str | None = None, limit: int = 20, newest_first: bool = True) -> tuple[list[Job], bool]:
        start = "+inf" if newest_first else "-inf"
        if after is not None:
            seq = self._redis.zscore(self.prefix + "jobs", after)
            if seq is None:
                return [], False
            start = f"({int(seq)}"
        if newest_first:
            ids = self._redis.zrevrangebyscore(self.prefix + "jobs", start, "-inf", start=0, num=limit + 1)
        else:
            ids = self._redis.zrangebyscore(self.prefix + "jobs", start, "+inf", start=0, num=limit + 1)
        jobs = self._get_many(ids)
        return jobs[:limit], len(ids) > limit

    def update(self, job_id: str, *, only_if: tuple[str, ...] | None = None, **fields) -> Job | None:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"cannot update job field(s) {sorted(unknown)}")
        claimant = only_if is not None and tuple(only_if) == ("in_progress",)
        sets = [(k, v) for k, v in fields.items() if v is not None]
        deletes = [k for k, v in fields.items() if v is None]
        args = [job_id, self.worker_id, "1" if claimant else "0", ",".join(only_if or ()), len(sets)]
        for name, value in sets:
            args += [name, _encode(value)]
        if not self._run("UPDATE", *args, *deletes):
            return None
        return self.get(job_id)

    def delete(self, job_id: str) -> bool:
        return bool(self._run("DELETE", job_id))

    def claim_next(self) -> Job | None:
        job_id = self._run("CLAIM", self.worker_id, self.lease_ms, self.max_attempts)
        return None if job_id is None else self.get(job_id.decode())

    def heartbeat(self, job_id: str) -> bool:
        return bool(self._run("HEARTBEAT", job_id, self.worker_id, self.lease_ms))

    def recover(self, *, max_attempts: int) -> list[Job]:
        """Only jobs whose lease expired: the other in_progress jobs belong to live workers."""
        ids = self._run("REAP", max_attempts)
        return self._get_many(list(ids))

    def count_by_status(self) -> dict[str, int]:
        counts = self._redis.hgetall(self.prefix + "counts")
        return {k.decode(): int(v) for k, v in counts.items() if int(v) > 0}

    def history(self, job_id: str) -> list[dict]:
        """The job's status changes, oldest first: {at (ms), status, worker, attempt, reason}."""
        return [json.loads(e) for e in self._redis.lrange(f"{self.prefix}history:{job_id}", 0, -1)]

    def close(self) -> None:
        self._redis.close()
