"""Settings, images, auth tokens, the drop-oldest queue, the SQLite job store."""

import asyncio
import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from server.auth import Authenticator
from client.protocol.errors import FramecastError
from server.images import decode_image
from server.jobs.sqlite_store import SqliteJobStore
from server.jobs.conditioning import JobConditioning
from server.jobs.store import Job
from server.metrics import Metrics
from server.send_queue import DropOldestQueue
from server.settings import Settings


def png_data_url(w=8, h=6):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 20, 30)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_settings_env_and_overrides(monkeypatch):
    monkeypatch.setenv("FRAMECAST_API_KEYS", "k1, k2")
    monkeypatch.setenv("FRAMECAST_MAX_SESSIONS", "3")
    s = Settings(port=0)
    assert s.api_keys == ["k1", "k2"] and s.auth_enabled and s.max_sessions == 3 and s.port == 0
    assert Settings(host="0.0.0.0").is_loopback is False and Settings().model == "shapes"


def test_images_decode_and_reject():
    pixels = decode_image(png_data_url(8, 6), max_bytes=10_000, max_pixels=1000)
    assert pixels.shape == (6, 8, 3) and pixels.dtype == np.uint8 and tuple(pixels[0, 0]) == (10, 20, 30)
    for data, code in [
        ("data:image/png;base64,!!!!", "bad_request"),
        ("data:image/png;base64," + base64.b64encode(b"not an image").decode(), "bad_request"),
        (png_data_url(8, 6), "too_large"),  # 48 pixels over a 40-pixel limit
        ("data:image/png;base64," + "A" * 20_000, "too_large"),
    ]:
        with pytest.raises(FramecastError) as info:
            decode_image(data, max_bytes=10_000, max_pixels=40)
        assert info.value.code == code


def test_auth_tokens():
    off = Authenticator([], token_ttl_s=60)
    assert not off.enabled and off.check_token(None) and off.check_bearer(None)
    auth = Authenticator(["secret"], token_ttl_s=60)
    assert auth.check_bearer("Bearer secret") and not auth.check_bearer("Bearer nope") and not auth.check_bearer(None)
    token, expires = auth.mint_token(now=1000)
    assert expires == 1060 and auth.check_token(token, now=1059) and not auth.check_token(token, now=1061)
    assert not auth.check_token(token[:-2] + "xx", now=1000) and not auth.check_token("garbage", now=1000)
    assert Authenticator(["secret"], token_ttl_s=60).check_token(token, now=1000)  # same keys, same secret
    assert not Authenticator(["other"], token_ttl_s=60).check_token(token, now=1000)


def test_drop_oldest_queue_counts_and_keeps_pinned():
    async def scenario():
        q = DropOldestQueue(2)
        q.put("init", droppable=False)
        assert q.put("c1") == 0 and q.put("c2") == 0
        assert q.put("c3") == 1  # c1 dropped, the pinned item stays
        q.put({"type": "stats"}, droppable=False)
        assert q.dropped == 1 and q.depth == 2 and len(q) == 4
        return [await q.get() for _ in range(4)]

    assert asyncio.run(scenario()) == ["init", "c2", "c3", {"type": "stats"}]


def test_sqlite_job_store(tmp_path):
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    jobs = [store.create(Job(id=Job.new_id(), conditioning=JobConditioning(f"p{i}", seed=i), seconds=1.0, model="tiny"))
            for i in range(5)]
    page, more = store.list(limit=2)
    assert [j.id for j in page] == [jobs[4].id, jobs[3].id] and more
    page2, more2 = store.list(after=page[-1].id, limit=10)
    assert [j.id for j in page2] == [jobs[2].id, jobs[1].id, jobs[0].id] and not more2
    claimed = store.claim_next()
    assert claimed.id == jobs[0].id and claimed.status == "in_progress" and claimed.attempts == 1
    assert store.update(jobs[1].id, only_if=("in_progress",), status="failed") is None  # still queued
    assert store.update(jobs[1].id, status="cancelled").status == "cancelled"
    store.close()

    reopened = SqliteJobStore(tmp_path / "jobs.sqlite3")  # a restart: the in-progress job is re-queued
    assert [j.status for j in reopened.recover(max_attempts=2)] == ["queued"]
    assert reopened.claim_next().attempts == 2
    assert [(j.status, bool(j.error)) for j in reopened.recover(max_attempts=2)] == [("failed", True)]
    assert reopened.count_by_status() == {"failed": 1, "cancelled": 1, "queued": 3}
    with pytest.raises(ValueError):
        reopened.update(jobs[2].id, conditioning=JobConditioning("changed"))


def test_metrics_registry_is_per_app():
    a, b = Metrics(), Metrics()
    a.dropped_chunks.inc(3)
    a.set_job_counts({"queued": 2})
    text = a.render().decode()
    assert "framecast_dropped_chunks_total 3.0" in text and 'framecast_jobs{status="queued"} 2.0' in text
    assert "framecast_dropped_chunks_total 0.0" in b.render().decode()
