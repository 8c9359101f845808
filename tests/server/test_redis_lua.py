"""The Lua scripts behind RedisJobStore (server/jobs/redis_lua.py), called directly on a real
redis-server the way the store calls them, with every key of the documented layout checked after
each status change: the job hash, its history, the listing, queue and lease sets and the counts.
(The store's contract on top of them: tests/deploy/test_redis_store.py.) Skipped without
redis-server or the redis client."""

from __future__ import annotations

import json
import time

import pytest

from server.jobs import redis_lua
from tests.deploy.harness import redis_url  # noqa: F401 (a fixture)

SCRIPTS = ("CREATE", "CLAIM", "REAP", "HEARTBEAT", "UPDATE", "DELETE", "MIGRATE")


class Keys:
    """The scripts on one key prefix, and readers of each key they keep."""

    def __init__(self, url: str, prefix: str):
        import redis

        self.r = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10)
        self.prefix = prefix
        self.keys = [prefix + name for name in ("queue", "leases", "counts", "jobs", "seq")]
        self.scripts = {name: self.r.register_script(getattr(redis_lua, name)) for name in SCRIPTS}

    def run(self, script: str, *args):
        return self.scripts[script](keys=self.keys, args=[self.prefix, *args])

    def create(self, job_id: str, status: str = "queued", *pairs: str):
        return self.run("CREATE", job_id, "id", job_id, "status", status, "attempts", "0", *pairs)

    def claim(self, worker: str, lease_ms: int = 60_000, max_attempts: int = 3) -> str | None:
        return self.run("CLAIM", worker, lease_ms, max_attempts)

    def update(self, job_id: str, worker: str, *, claimant: bool = False, only_if: str = "",
               set: dict | None = None, delete: tuple = ()) -> int:
        pairs = [x for kv in (set or {}).items() for x in kv]
        return self.run("UPDATE", job_id, worker, "1" if claimant else "0", only_if, len(set or {}), *pairs, *delete)

    def job(self, job_id: str) -> dict:
        return self.r.hgetall(f"{self.prefix}job:{job_id}")

    def history(self, job_id: str) -> list[dict]:
        return [json.loads(e) for e in self.r.lrange(f"{self.prefix}history:{job_id}", 0, -1)]

    def queue(self) -> list[str]:
        return self.r.zrange(self.prefix + "queue", 0, -1)

    def listing(self) -> list[str]:
        return self.r.zrange(self.prefix + "jobs", 0, -1)

    def leases(self) -> dict[str, float]:
        return dict(self.r.zrange(self.prefix + "leases", 0, -1, withscores=True))

    def counts(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.r.hgetall(self.prefix + "counts").items() if int(v)}

    def now_ms(self) -> int:
        seconds, micros = self.r.time()
        return seconds * 1000 + micros // 1000


@pytest.fixture
def lua(redis_url, request):
    keys = Keys(redis_url, f"lua-{request.node.name}:")
    yield keys
    keys.r.close()


def without_at(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in entry.items() if k != "at"} for entry in history]


def test_create_indexes_the_job_and_refuses_an_existing_id(lua):
    import redis

    before = lua.now_ms()
    assert [lua.create("j1"), lua.create("j2", "queued", "prompt", "a ball"), lua.create("j3", "failed")] == [1, 2, 3]
    assert lua.job("j2") == {"id": "j2", "status": "queued", "attempts": "0", "prompt": "a ball", "seq": "2"}
    assert lua.listing() == ["j1", "j2", "j3"] and lua.queue() == ["j1", "j2"]  # only queued jobs wait
    assert lua.counts() == {"queued": 2, "failed": 1}
    (entry,) = lua.history("j1")
    assert entry["status"] == "queued" and before <= entry["at"] <= lua.now_ms() and set(entry) == {"at", "status"}
    with pytest.raises(redis.ResponseError, match="job j1 exists"):
        lua.create("j1", "failed")
    assert lua.job("j1")["status"] == "queued" and lua.counts() == {"queued": 2, "failed": 1}
    assert lua.create("j4") == 4 and len(lua.history("j1")) == 1  # the refused create left no trace


def test_claim_takes_the_oldest_queued_job_under_a_lease(lua):
    for job_id in ("j1", "j2"):
        lua.create(job_id, "queued", "progress", "37")
    before = lua.now_ms()
    assert lua.claim("w1", lease_ms=5_000) == "j1"
    job = lua.job("j1")
    assert (job["status"], job["owner"], job["attempts"], job["progress"]) == ("in_progress", "w1", "1", "0")
    assert lua.queue() == ["j2"] and list(lua.leases()) == ["j1"]
    assert before + 5_000 <= lua.leases()["j1"] <= lua.now_ms() + 5_000  # Redis' clock, not ours
    assert lua.counts() == {"queued": 1, "in_progress": 1}
    assert without_at(lua.history("j1"))[-1] == {"status": "in_progress", "worker": "w1", "attempt": 1}
    assert lua.claim("w2") == "j2" and lua.job("j2")["owner"] == "w2"
    assert lua.claim("w1") is None and lua.counts() == {"in_progress": 2}


def test_claim_drops_queue_entries_of_jobs_no_longer_queued(lua):
    lua.create("j1")
    lua.create("j2")
    lua.r.hset(f"{lua.prefix}job:j1", "status", "cancelled")  # a stale entry (should not happen)
    assert lua.claim("w1") == "j2"
    assert lua.queue() == [] and lua.job("j1")["status"] == "cancelled"


def test_expired_claims_are_requeued_then_failed_after_max_attempts(lua):
    lua.create("j1")
    assert lua.claim("w1", lease_ms=1, max_attempts=2) == "j1"
    time.sleep(0.02)
    assert lua.claim("w2", lease_ms=1, max_attempts=2) == "j1"  # CLAIM reaps first: w1's claim went back
    assert lua.job("j1")["attempts"] == "2" and lua.job("j1")["owner"] == "w2"
    time.sleep(0.02)
    assert lua.run("REAP", 2) == ["j1"]
    job = lua.job("j1")
    assert job["status"] == "failed" and "owner" not in job
    assert job["error"] == "interrupted 2 times (last: worker w2 stopped renewing its claim)"
    assert lua.queue() == [] and lua.leases() == {} and lua.counts() == {"failed": 1}
    assert without_at(lua.history("j1")) == [
        {"status": "queued"},
        {"status": "in_progress", "worker": "w1", "attempt": 1},
        {"status": "queued", "worker": "w1", "attempt": 1, "reason": "worker w1 stopped renewing its claim"},
        {"status": "in_progress", "worker": "w2", "attempt": 2},
        {"status": "failed", "worker": "w2", "attempt": 2, "reason": job["error"]},
    ]


def test_reap_requeues_with_progress_reset_and_keeps_live_claims(lua):
    lua.create("dead")
    lua.create("live")
    assert lua.claim("w1") == "dead" and lua.claim("w2") == "live"
    lua.update("dead", "w1", set={"progress": "60"})
    # w1's lease runs out (set in the past rather than waited for: a short lease could also run
    # out before w2's CLAIM, which reaps first, and hand "dead" to w2)
    lua.r.zadd(lua.prefix + "leases", {"dead": lua.now_ms() - 1})
    lua.r.zadd(lua.prefix + "leases", {"gone": 0})  # the lease of a job no longer in progress
    assert lua.run("REAP", 3) == ["dead"]
    dead = lua.job("dead")
    assert (dead["status"], dead["progress"], "owner" in dead) == ("queued", "0", False)
    assert lua.queue() == ["dead"] and list(lua.leases()) == ["live"]  # the stray lease dropped too
    assert lua.counts() == {"queued": 1, "in_progress": 1}
    assert lua.run("REAP", 3) == []


def test_heartbeat_renews_only_the_claim_of_its_owner(lua):
    lua.create("j1")
    assert lua.claim("w1", lease_ms=1_000) == "j1"
    first = lua.leases()["j1"]
    assert lua.run("HEARTBEAT", "j1", "w2", 60_000) == 0 and lua.leases()["j1"] == first
    assert lua.run("HEARTBEAT", "j1", "w1", 60_000) == 1 and lua.leases()["j1"] >= first + 59_000
    assert lua.update("j1", "w1", set={"status": "completed"}) == 1
    assert lua.run("HEARTBEAT", "j1", "w1", 60_000) == 0 and lua.leases() == {}
    assert lua.run("HEARTBEAT", "missing", "w1", 60_000) == 0 and lua.leases() == {}


def test_update_applies_only_under_its_conditions(lua):
    lua.create("j1")
    assert lua.update("missing", "w1", set={"progress": "5"}) == 0 and lua.job("missing") == {}
    assert lua.update("j1", "w1", only_if="in_progress,failed", set={"status": "failed"}) == 0  # still queued
    assert lua.update("j1", "w1", only_if="not_queued", set={"status": "failed"}) == 0  # whole names only
    assert lua.job("j1")["status"] == "queued"
    assert lua.claim("w1") == "j1"
    assert lua.update("j1", "w2", claimant=True, only_if="in_progress", set={"progress": "50"}) == 0  # not w2's
    assert lua.update("j1", "w1", claimant=True, only_if="queued,in_progress",
                      set={"progress": "50", "error": "x"}) == 1
    assert (lua.job("j1")["progress"], lua.job("j1")["error"]) == ("50", "x")
    assert lua.update("j1", "w9", delete=("error",)) == 1 and "error" not in lua.job("j1")  # no condition: applies
    assert lua.job("j1")["status"] == "in_progress" and len(lua.history("j1")) == 2  # no status change, no entry


def test_update_status_changes_move_the_job_between_sets(lua):
    lua.create("j1")
    assert lua.claim("w1") == "j1"
    assert lua.update("j1", "w1", claimant=True, only_if="in_progress",
                      set={"status": "queued", "progress": "0"}) == 1  # drained: back in the queue
    assert lua.queue() == ["j1"] and lua.leases() == {} and "owner" not in lua.job("j1")
    assert lua.counts() == {"queued": 1}
    assert lua.claim("w2") == "j1"
    assert lua.update("j1", "w2", claimant=True, only_if="in_progress",
                      set={"error": "render failed: boom", "status": "failed"}) == 1
    assert lua.queue() == [] and lua.leases() == {} and lua.counts() == {"failed": 1}
    assert lua.update("j1", "w2", set={"status": "failed"}) == 1  # already failed: no second entry
    assert without_at(lua.history("j1"))[2:] == [
        {"status": "queued", "worker": "w1", "attempt": 1},  # no reason: only failures and cancels have one
        {"status": "in_progress", "worker": "w2", "attempt": 2},
        {"status": "failed", "worker": "w2", "attempt": 2, "reason": "render failed: boom"},
    ]


def test_delete_removes_the_job_from_every_key(lua):
    lua.create("j1")
    lua.create("j2")
    assert lua.claim("w1") == "j1"
    assert lua.run("DELETE", "j1") == 1
    assert lua.job("j1") == {} and lua.history("j1") == [] and lua.listing() == ["j2"]
    assert lua.leases() == {} and lua.counts() == {"queued": 1}
    assert lua.run("DELETE", "j1") == 0 and lua.counts() == {"queued": 1}
    assert lua.run("DELETE", "j2") == 1
    assert lua.queue() == [] and lua.listing() == [] and lua.counts() == {} and lua.claim("w1") is None


def test_migrate_merges_old_fields_into_conditioning_once(lua):
    lua.create("old", "queued", "prompt", "a ball", "seed", "11", "image", "png-bytes", "seconds", "1.5")
    lua.create("new", "queued", "conditioning", '{"prompt": "b"}')
    lua.create("both", "queued", "conditioning", '{"prompt": "c"}', "prompt", "c")  # not of the old schema
    merged = json.dumps({"prompt": "a ball", "seed": 11})
    assert lua.run("MIGRATE", "old", merged) == 1
    assert lua.job("old") == {"id": "old", "status": "queued", "attempts": "0", "seconds": "1.5", "seq": "1",
                              "conditioning": merged}
    assert lua.run("MIGRATE", "old", '{"prompt": "again"}') == 0 and lua.job("old")["conditioning"] == merged
    assert lua.run("MIGRATE", "new", merged) == 0 and lua.job("new")["conditioning"] == '{"prompt": "b"}'
    assert lua.run("MIGRATE", "both", merged) == 0 and lua.job("both")["conditioning"] == '{"prompt": "c"}'
    assert lua.run("MIGRATE", "missing", merged) == 0 and lua.job("missing") == {}
