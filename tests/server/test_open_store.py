"""`open_job_store(settings)` (server/jobs/open_store.py): embedded SQLite in the data directory, or
the shared Redis store (with the settings' lease and attempts) when a Redis URL is set, as
FRAMECAST_REDIS_URL sets it. The Redis half is skipped without redis-server or the redis client."""

import pytest

from server.jobs.conditioning import JobConditioning
from server.jobs.open_store import open_job_store
from server.jobs.store import Job
from server.settings import Settings
from tests.deploy.harness import redis_url  # noqa: F401 (a fixture)


def _job(prompt: str) -> Job:
    return Job(id=Job.new_id(), conditioning=JobConditioning(prompt, seed=1), seconds=1.0, model="tiny")


@pytest.fixture(autouse=True)
def _no_redis_from_the_environment(monkeypatch):
    monkeypatch.delenv("FRAMECAST_REDIS_URL", raising=False)


def test_without_a_redis_url_jobs_live_in_sqlite_in_the_data_dir(tmp_path):
    from server.jobs.sqlite_store import SqliteJobStore

    store = open_job_store(Settings(data_dir=tmp_path))
    assert isinstance(store, SqliteJobStore) and (tmp_path / "jobs.sqlite3").is_file()
    job = store.create(_job("kept"))
    store.close()
    again = open_job_store(Settings(data_dir=tmp_path))  # the next process on this data dir finds it
    assert again.get(job.id) == job
    again.close()


def test_a_redis_url_opens_the_shared_store_with_the_job_settings(redis_url, tmp_path, monkeypatch):
    from server.jobs.redis_store import RedisJobStore

    monkeypatch.setenv("FRAMECAST_REDIS_URL", redis_url)
    store = open_job_store(Settings(data_dir=tmp_path, job_lease_s=2.5, job_max_attempts=5))
    assert isinstance(store, RedisJobStore)
    assert (store.lease_ms, store.max_attempts) == (2500, 5)
    job = store.create(_job("shared"))
    other = RedisJobStore(redis_url, worker_id="other-worker")  # any process on the same Redis sees it
    assert other.get(job.id) == job
    assert not (tmp_path / "jobs.sqlite3").exists()
    for s in (store, other):
        s.close()
