"""RedisJobStore against a real redis-server: the JobStore contract, exactly-once claims under
concurrency, lease expiry and fencing, max attempts, status counts and history."""

from __future__ import annotations

import threading
import time

import pytest

from server.jobs.conditioning import JobConditioning
from server.jobs.store import Job
from tests.deploy.harness import redis_url  # noqa: F401 (a fixture)

LEASE_S = 1.5  # claim lease: long against scheduler stalls on a loaded 2-core CI machine, short enough to wait out


@pytest.fixture
def stores(redis_url, request):
    """Two workers' stores on one fresh key prefix (lease LEASE_S, at most 2 attempts)."""
    from server.jobs.redis_store import RedisJobStore

    prefix = f"t-{request.node.name}:"
    made = [RedisJobStore(redis_url, lease_s=LEASE_S, max_attempts=2, prefix=prefix, worker_id=name) for name in "AB"]
    yield made
    for store in made:
        store.close()


def _job(i: int, media: dict[str, bytes] | None = None, **extra) -> Job:
    conditioning = JobConditioning(f"prompt {i}", seed=i, media=media or {})
    return Job(id=Job.new_id(), conditioning=conditioning, seconds=1.5, model="tiny", **extra)


def test_records_round_trip_and_paginate(stores):
    a, b = stores
    jobs = [a.create(_job(i, media={"image": b"\x89PNG\x00\xff"} if i == 0 else None, size="64x64")) for i in range(5)]
    assert b.get(jobs[0].id) == jobs[0]  # every field, bytes and None included, from the other worker
    assert b.get("video_missing") is None
    page, more = b.list(limit=2)
    assert [j.id for j in page] == [jobs[4].id, jobs[3].id] and more
    rest, more = a.list(after=page[-1].id, limit=10)
    assert [j.id for j in rest] == [jobs[2].id, jobs[1].id, jobs[0].id] and not more
    assert a.list(after="video_missing") == ([], False)
    assert a.count_by_status() == {"queued": 5}


def test_concurrent_claims_hand_out_each_job_once(stores, redis_url):
    from server.jobs.redis_store import RedisJobStore

    a, _ = stores
    ids = [a.create(_job(i)).id for i in range(40)]
    workers = [RedisJobStore(redis_url, lease_s=30, prefix=a.prefix, worker_id=f"w{i}") for i in range(4)]
    claimed: list[list[str]] = [[] for _ in workers]

    def drain(store, out):
        while (job := store.claim_next()) is not None:
            out.append(job.id)

    threads = [threading.Thread(target=drain, args=(w, out)) for w, out in zip(workers, claimed)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    every = [i for out in claimed for i in out]
    assert sorted(every) == sorted(ids)  # all claimed, none twice
    assert all(out == sorted(out, key=ids.index) for out in claimed)  # oldest first, per worker
    assert a.count_by_status() == {"in_progress": 40}
    assert {a.get(i).attempts for i in ids} == {1}
    for w in workers:
        w.close()


def test_expired_claim_is_requeued_and_the_old_owner_fenced(stores):
    a, b = stores
    job = a.create(_job(0))
    assert a.claim_next().id == job.id
    assert b.claim_next() is None  # claimed: invisible to others
    for _ in range(3):  # renewals keep it
        time.sleep(0.3 * LEASE_S)
        assert a.heartbeat(job.id)
    assert b.claim_next() is None
    assert a.update(job.id, only_if=("in_progress",), progress=40).progress == 40
    assert b.update(job.id, only_if=("in_progress",), progress=90) is None  # not B's claim
    time.sleep(1.2 * LEASE_S)  # A stops renewing
    taken = b.claim_next()
    assert taken.id == job.id and taken.attempts == 2 and taken.progress == 0
    assert not a.heartbeat(job.id)  # A learns it lost the job
    assert a.update(job.id, only_if=("in_progress",), status="completed") is None  # fenced
    assert b.update(job.id, only_if=("in_progress",), status="completed", progress=100, completed_at=1).status == "completed"
    history = a.history(job.id)
    assert [(h["status"], h.get("worker"), h.get("attempt")) for h in history] == [
        ("queued", None, None), ("in_progress", "A", 1), ("queued", "A", 1), ("in_progress", "B", 2),
        ("completed", "B", 2)]
    assert "stopped renewing" in history[2]["reason"]
    assert a.count_by_status() == {"completed": 1}


def test_max_attempts_fail_and_recover_reaps_only_expired(stores):
    a, b = stores
    doomed, alive = a.create(_job(0)), a.create(_job(1))
    assert a.claim_next().id == doomed.id
    time.sleep(1.2 * LEASE_S)
    assert b.claim_next().id == doomed.id  # attempt 2 (the limit)
    assert a.claim_next().id == alive.id
    time.sleep(0.6 * LEASE_S)
    assert a.heartbeat(alive.id)
    time.sleep(0.6 * LEASE_S)  # doomed's second claim expired, alive's was renewed (with 0.4 leases of slack)
    changed = a.recover(max_attempts=2)
    assert [j.id for j in changed] == [doomed.id]
    failed = a.get(doomed.id)
    assert failed.status == "failed" and "interrupted 2 times" in failed.error
    assert a.get(alive.id).status == "in_progress"
    assert a.count_by_status() == {"failed": 1, "in_progress": 1}


def test_cancel_requeue_and_plain_updates(stores):
    a, b = stores
    queued, running = a.create(_job(0)), a.create(_job(1))
    assert a.update(queued.id, only_if=("in_progress",), status="failed") is None  # CAS: still queued
    cancelled = b.update(queued.id, only_if=("queued", "in_progress"), status="cancelled", error="by client")
    assert cancelled.status == "cancelled" and cancelled.error == "by client"
    assert a.claim_next().id == running.id  # the cancelled job left the queue
    assert b.update(running.id, only_if=("queued", "in_progress"), status="cancelled", error="stop").status == "cancelled"
    assert not a.heartbeat(running.id)
    again = a.create(_job(2))
    assert a.claim_next().id == again.id
    assert a.update(again.id, only_if=("in_progress",), status="queued", progress=0).status == "queued"  # drain
    assert b.claim_next().id == again.id  # re-queued jobs are claimable at once
    assert a.update(again.id, status="failed", error="x").error == "x"  # no condition: always applies
    assert a.update(again.id, error=None).error is None
    with pytest.raises(ValueError):
        a.update(again.id, conditioning=JobConditioning("changed"))
    assert a.count_by_status() == {"cancelled": 2, "failed": 1}


def test_sqlite_heartbeat_reports_whether_the_job_still_runs(tmp_path):
    """The embedded store's side of the heartbeat contract (one process: claims never expire)."""
    from server.jobs.sqlite_store import SqliteJobStore

    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    job = store.create(_job(0))
    assert not store.heartbeat(job.id)  # queued, not claimed
    assert store.claim_next().id == job.id and store.heartbeat(job.id)
    store.update(job.id, only_if=("queued", "in_progress"), status="cancelled", error="by client")
    assert not store.heartbeat(job.id) and not store.heartbeat("video_missing")
    store.close()


@pytest.mark.parametrize("backend", ["redis", "sqlite"])
def test_delete_removes_the_job_everywhere(stores, tmp_path, backend):
    from server.jobs.sqlite_store import SqliteJobStore

    store = stores[0] if backend == "redis" else SqliteJobStore(tmp_path / "jobs.sqlite3")
    extended = store.create(_job(0, extends_video_id="video_src", source_seconds=2.5, remixed_from_video_id="video_r"))
    queued, running = store.create(_job(1)), store.create(_job(2))
    assert store.get(extended.id) == extended  # the extension fields round-trip
    assert store.claim_next().id == extended.id
    assert store.delete(extended.id) and store.delete(queued.id)
    assert not store.delete(queued.id) and store.get(queued.id) is None
    assert [j.id for j in store.list(limit=10)[0]] == [running.id]
    later = store.create(_job(3))
    oldest, more = store.list(limit=1, newest_first=False)
    assert [j.id for j in oldest] == [running.id] and more
    assert [j.id for j in store.list(after=running.id, newest_first=False)[0]] == [later.id]
    store.delete(later.id)
    assert store.count_by_status() == {"queued": 1}
    assert store.claim_next().id == running.id and store.claim_next() is None  # the deleted queued job is gone


def test_hashes_of_the_old_schema_are_migrated(stores, redis_url):
    """Job hashes written before conditioning was one field (prompt, seed, image as their own hash
    fields, the way the old store's CREATE wrote them) read back as JobConditioning."""
    from server.jobs.redis_store import RedisJobStore

    a, _ = stores
    common = ["seconds", "1.5", "model", "tiny", "status", "queued", "progress", "0", "created_at", "5",
              "attempts", "0", "size", "64x64", "source_seconds", "0.0"]
    a._run("CREATE", "video_old1", "id", "video_old1", "prompt", "a red ball", "seed", "11", "image", b"\x89PNG\x00\xff", *common)
    a._run("CREATE", "video_old2", "id", "video_old2", "prompt", "a blue square", *common)
    new = a.create(_job(3))
    migrated = [RedisJobStore(redis_url, prefix=a.prefix, worker_id=f"m{i}") for i in range(2)]  # twice: idempotent
    one, two = migrated[0].get("video_old1"), migrated[0].get("video_old2")
    assert one.conditioning == JobConditioning("a red ball", seed=11, media={"image": b"\x89PNG\x00\xff"})
    assert two.conditioning == JobConditioning("a blue square") and two.seconds == 1.5
    assert migrated[1].get(new.id) == new
    raw = a._redis.hgetall(a._key("video_old1"))
    assert b"conditioning" in raw and not {b"prompt", b"seed", b"image"} & set(raw)
    assert migrated[1].claim_next().id == "video_old1"
    for store in migrated:
        store.close()
