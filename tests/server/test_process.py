"""`framecast serve` as a real process: SIGKILL during a job + restart, then SIGTERM drains sessions."""

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.server_harness import (connect, free_port, http, next_chunks, next_event, send, serve_command, spawn_serve,
                                  wait_healthy)


def start(data_dir: Path, port: int, log: Path) -> subprocess.Popen:
    proc = spawn_serve(serve_command(port, data_dir, "--device", "cpu", "--max-sessions", "2", model="tiny"), log)
    wait_healthy(proc, f"http://127.0.0.1:{port}", log)
    return proc


@pytest.fixture
def stop_procs():
    procs = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_kill_during_job_then_restart_then_graceful_shutdown(tmp_path, stop_procs):
    port, log = free_port(), tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    proc = start(tmp_path, port, log)
    stop_procs.append(proc)
    assert "framecast serving tiny" in log.read_text()  # the one-line startup log

    status, video = http("POST", url + "/v1/videos", {"prompt": "interrupted", "seconds": 40, "seed": 3})
    assert status == 200
    deadline = time.monotonic() + 120
    while http("GET", f"{url}/v1/videos/{video['id']}")[1]["progress"] == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)

    proc = start(tmp_path, port, log)  # same data dir
    stop_procs.append(proc)
    status, again = http("GET", f"{url}/v1/videos/{video['id']}")
    assert status == 200 and again["status"] in ("queued", "in_progress") and again["progress"] < 100
    assert http("GET", f"{url}/v1/videos/{video['id']}/content")[0] == 409
    assert not (tmp_path / "videos" / f"{video['id']}.mp4").exists()  # only a .partial, never a torn file
    assert http("DELETE", f"{url}/v1/videos/{video['id']}")[1] == {"id": video["id"], "object": "video.deleted",
                                                                   "deleted": True}
    deadline = time.monotonic() + 60  # the running job notices at its next chunk and drops its partial file
    while list(tmp_path.rglob(f"{video['id']}*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not list(tmp_path.rglob(f"{video['id']}*"))

    async def graceful():
        async with connect(f"ws://127.0.0.1:{port}/v1/realtime") as ws:
            await send(ws, {"type": "session.start", "prompt": "until shutdown"})
            await next_chunks(ws, 1, timeout=120)
            os.kill(proc.pid, signal.SIGTERM)
            done = await next_event(ws, "session.done", timeout=60)
            await asyncio.wait_for(ws.wait_closed(), 30)
            return done, ws.close_code

    done, close_code = asyncio.run(graceful())
    assert done["reason"] == "shutdown" and close_code == 1001
    assert proc.wait(60) == 0
