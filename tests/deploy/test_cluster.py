"""Scale-out on loopback: two `framecast serve --model tiny` workers sharing a real redis-server and
one data directory, with nginx running the repo's gateway config in front of them.

- live sessions through the gateway stream chunks; with one session slot per worker, two sessions
  land on different workers (both report full on /readyz) and a third is refused with `capacity`;
- 10 jobs posted alternately to both workers all complete, each rendered exactly once (counted
  from the workers' logs and the store's history), each readable and downloadable from both;
- a job that renders for longer than the claim's lease keeps it (the runner renews it);
- `kill -9` of the worker rendering a job: the other re-runs it after the claim expires; the
  status history reads queued -> in_progress -> queued -> in_progress -> completed, one MP4.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import websockets

from client.protocol.chunks import parse_chunk
from tests.deploy.harness import Worker, nginx_gateway, redis_server, require, require_redis_client

LEASE_S = 4.0  # claim lifetime: the killed worker's job is re-queued this long after its last renewal
JOB_SECONDS = 0.5
pytestmark = pytest.mark.timeout(240)


class Cluster:
    """redis + two workers (one session slot each) + the nginx gateway."""

    def __init__(self, redis_url: str, workers: list[Worker], gateway: str, data_dir: Path):
        self.redis_url, self.workers, self.gateway, self.data_dir = redis_url, workers, gateway, data_dir

    def restart_dead(self) -> None:
        """A test that killed a worker leaves it dead; bring it back for the next one."""
        dead = [w for w in self.workers if not w.alive]
        for worker in dead:
            worker.start()
        for worker in dead:
            worker.wait_ready()

    def store(self):
        from server.jobs.redis_store import RedisJobStore

        return RedisJobStore(self.redis_url, worker_id="test-observer")

    def executions(self) -> Counter:
        total = Counter()
        for worker in self.workers:
            total += worker.executions()
        return total


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require("redis-server")
    require("nginx")
    require_redis_client()
    root = tmp_path_factory.mktemp("deploy")
    data_dir = root / "shared-data"  # what a shared volume is to containers
    with redis_server(root / "redis") as redis_url:
        workers = [Worker(f"worker{i}", data_dir, root, redis_url, max_sessions=1, lease_s=LEASE_S) for i in range(2)]
        try:
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.wait_ready()
            with nginx_gateway(root / "nginx", [f"127.0.0.1:{w.port}" for w in workers]) as gateway:
                yield Cluster(redis_url, workers, gateway, data_dir)
        finally:
            for worker in workers:
                worker.stop()


# ---- live sessions through the gateway ----

def _ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/v1/realtime"


async def _start_session(url: str, prompt: str):
    ws = await websockets.connect(url, compression=None, max_size=None, open_timeout=20)
    try:
        await ws.send(json.dumps({"type": "session.start", "prompt": prompt, "seed": 1}))
    except websockets.ConnectionClosed:  # a full worker refuses right after the upgrade; recv() shows why
        pass
    return ws


async def _next_json(ws, timeout: float = 30.0) -> dict:
    while True:
        message = await asyncio.wait_for(ws.recv(), timeout)
        if isinstance(message, str):
            event = json.loads(message)
            if event["type"] != "stats":
                return event


async def _chunks(ws, n: int, timeout: float = 60.0) -> list:
    chunks = []
    while len(chunks) < n:
        message = await asyncio.wait_for(ws.recv(), timeout)
        if isinstance(message, bytes):
            chunks.append(parse_chunk(message))
    return chunks


def _ready_codes(cluster: Cluster) -> list[int]:
    return [httpx.get(w.url + "/readyz", timeout=5).status_code for w in cluster.workers]


def test_gateway_spreads_sessions_and_refuses_the_third(cluster):
    cluster.restart_dead()
    url = _ws_url(cluster.gateway)
    assert _ready_codes(cluster) == [200, 200]

    async def scenario():
        first = await _start_session(url, "a red circle on black")
        assert (await _next_json(first))["type"] == "session.started"
        second = await _start_session(url, "a blue square on white")
        assert (await _next_json(second))["type"] == "session.started"
        for ws in (first, second):  # both stream through the gateway at the same time
            chunks = await _chunks(ws, 2)
            assert chunks[0].chunk_index < chunks[1].chunk_index
            for chunk in chunks:
                jpegs = chunk.jpeg_frames()
                assert chunk.frame_count == len(jpegs) > 0 and all(j[:2] == b"\xff\xd8" for j in jpegs)
        # one slot per worker and both sessions admitted: one on each, and both say so
        assert _ready_codes(cluster) == [503, 503]

        third = await _start_session(url, "a green triangle")
        error = await _next_json(third)
        assert error["type"] == "error" and error["code"] == "capacity", error
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(third.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013

        # a freed slot takes the next session (least_conn sends it to the idle worker)
        await first.send(json.dumps({"type": "session.stop"}))
        while (await _next_json(first))["type"] != "session.done":
            pass
        await first.close()
        deadline = time.monotonic() + 10
        while sorted(_ready_codes(cluster)) != [200, 503] and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert sorted(_ready_codes(cluster)) == [200, 503]
        fourth = await _start_session(url, "a white circle on navy")
        assert (await _next_json(fourth))["type"] == "session.started"
        assert len(await _chunks(fourth, 1)) == 1
        for ws in (second, fourth):
            await ws.close()

    asyncio.run(scenario())
    models = httpx.get(cluster.gateway + "/v1/models", timeout=10)  # REST through the gateway
    assert models.status_code == 200 and models.json()["data"][0]["id"] == "tiny"


# ---- jobs across workers ----

def _wait_terminal(urls: list[str], ids: list[str], timeout: float) -> dict[str, dict]:
    deadline, done, turn = time.monotonic() + timeout, {}, 0
    while len(done) < len(ids) and time.monotonic() < deadline:
        for job_id in ids:
            if job_id not in done:
                turn += 1
                video = httpx.get(f"{urls[turn % len(urls)]}/v1/videos/{job_id}", timeout=10).json()
                if video["status"] in ("completed", "failed", "cancelled"):
                    done[job_id] = video
        time.sleep(0.2)
    missing = [i for i in ids if i not in done]
    assert not missing, f"not finished after {timeout} s: {missing}"
    return done


def _frames(path: Path) -> int | None:
    """Decoded frame count via ffprobe, or None where ffprobe is not installed."""
    if shutil.which("ffprobe") is None:
        return None
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
                          "stream=nb_read_frames", "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def _fps(cluster: Cluster) -> int:
    worker = next(w for w in cluster.workers if w.alive)
    return httpx.get(worker.url + "/v1/models", timeout=10).json()["data"][0]["fps"]


def test_jobs_posted_to_both_workers_run_exactly_once(cluster):
    cluster.restart_dead()
    urls = [w.url for w in cluster.workers]
    before = cluster.executions()
    ids = []
    for i in range(10):
        response = httpx.post(urls[i % 2] + "/v1/videos", json={"prompt": f"a red circle {i}", "seconds": JOB_SECONDS,
                                                                  "seed": i}, timeout=10)
        assert response.status_code == 200, response.text
        ids.append(response.json()["id"])
    finished = _wait_terminal(urls, ids, timeout=120)
    assert {v["status"] for v in finished.values()} == {"completed"}, finished

    runs = cluster.executions() - before
    assert {job_id: runs[job_id] for job_id in ids} == {job_id: 1 for job_id in ids}  # exactly once
    per_worker = [sum(w.executions()[i] for i in ids) for w in cluster.workers]
    assert all(n >= 1 for n in per_worker), f"one worker ran every job: {per_worker}"

    store = cluster.store()
    expected_frames = round(JOB_SECONDS * _fps(cluster))
    for job_id in ids:
        assert [h["status"] for h in store.history(job_id)] == ["queued", "in_progress", "completed"]
        assert store.get(job_id).attempts == 1
        views = [httpx.get(f"{u}/v1/videos/{job_id}", timeout=10).json() for u in urls]
        assert views[0] == views[1] and views[0]["progress"] == 100
        bodies = [httpx.get(f"{u}/v1/videos/{job_id}/content", timeout=10) for u in urls]
        assert [b.status_code for b in bodies] == [200, 200]
        assert bodies[0].headers["content-type"] == "video/mp4" and bodies[0].content == bodies[1].content
        assert bodies[0].content[4:8] == b"ftyp"
        frames = _frames(cluster.data_dir / "videos" / f"{job_id}.mp4")
        assert frames in (None, expected_frames)
    store.close()
    assert not list((cluster.data_dir / "videos").glob("*.partial"))


def test_job_longer_than_the_lease_keeps_its_claim(cluster):
    cluster.restart_dead()
    seconds = 45.0  # 720 frames: a few leases long on a CPU
    response = httpx.post(cluster.workers[1].url + "/v1/videos", json={"prompt": "a white circle", "seconds": seconds,
                                                                        "seed": 3}, timeout=10)
    job_id = response.json()["id"]
    finished = _wait_terminal([w.url for w in cluster.workers], [job_id], timeout=120)[job_id]
    assert finished["status"] == "completed"
    store = cluster.store()
    history = store.history(job_id)
    assert [h["status"] for h in history] == ["queued", "in_progress", "completed"]  # never taken over
    assert store.get(job_id).attempts == 1 and cluster.executions()[job_id] == 1
    store.close()
    rendering_ms = history[2]["at"] - history[1]["at"]
    if rendering_ms <= LEASE_S * 1000:
        pytest.skip(f"rendered in {rendering_ms} ms, within one lease: renewal was not needed here")


def test_killed_worker_job_is_finished_by_the_other(cluster):
    cluster.restart_dead()
    store = cluster.store()
    seconds = 4.0  # long enough to be caught mid-render
    response = httpx.post(cluster.workers[0].url + "/v1/videos", json={"prompt": "a blue square", "seconds": seconds,
                                                                        "seed": 7}, timeout=10)
    job_id = response.json()["id"]

    deadline = time.monotonic() + 60
    owner = None
    while time.monotonic() < deadline:  # wait until some worker is rendering it, past its first chunk
        job = store.get(job_id)
        if job.status == "in_progress" and job.progress > 0:
            owner = store._redis.hget(store._key(job_id), "owner")
            break
        assert job.status in ("queued", "in_progress"), job
        time.sleep(0.01)
    assert owner is not None, "the job never started"
    owner_pid = int(owner.decode().split(":")[1])
    victim = next(w for w in cluster.workers if w.process.pid == owner_pid)
    survivor = next(w for w in cluster.workers if w is not victim)
    victim.kill()

    finished = _wait_terminal([survivor.url], [job_id], timeout=90)[job_id]
    assert finished["status"] == "completed" and finished["progress"] == 100

    history = store.history(job_id)
    assert [h["status"] for h in history] == ["queued", "in_progress", "queued", "in_progress", "completed"]
    assert [h.get("attempt") for h in history[1:]] == [1, 1, 2, 2]
    victim_id, survivor_id = history[1]["worker"], history[3]["worker"]
    assert victim_id.split(":")[1] == str(victim.process.pid) and survivor_id.split(":")[1] == str(survivor.process.pid)
    assert history[2]["worker"] == victim_id and "stopped renewing" in history[2]["reason"]
    assert history[4]["worker"] == survivor_id
    assert [h["at"] for h in history] == sorted(history[i]["at"] for i in range(len(history)))
    assert history[3]["at"] - history[1]["at"] >= LEASE_S * 1000 * 0.9  # re-queued only once the claim expired
    assert store.get(job_id).attempts == 2

    assert victim.executions()[job_id] == 1 and survivor.executions()[job_id] == 1
    outputs = sorted(p.name for p in (cluster.data_dir / "videos").glob(f"{job_id}*"))
    assert outputs == [f"{job_id}{s}" for s in (".mp4", ".spritesheet.jpg", ".thumbnail.webp")]  # partial replaced
    body = httpx.get(f"{survivor.url}/v1/videos/{job_id}/content", timeout=10)
    assert body.status_code == 200 and body.content == (cluster.data_dir / "videos" / f"{job_id}.mp4").read_bytes()
    assert _frames(cluster.data_dir / "videos" / f"{job_id}.mp4") in (None, round(seconds * _fps(cluster)))
    store.close()
    assert os.path.getsize(cluster.data_dir / "videos" / f"{job_id}.mp4") > 0
