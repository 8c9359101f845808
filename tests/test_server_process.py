"""`framecast serve` as a real process: SIGKILL during a job + restart, then SIGTERM drains sessions."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from server_harness import connect, free_port, http, next_chunks, next_event, send

ROOT = Path(__file__).resolve().parents[1]


def start(data_dir: Path, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "client.cli", "serve", "--model", "tiny", "--device", "cpu", "--port", str(port),
           "--data-dir", str(data_dir), "--max-sessions", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if http("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise AssertionError("server did not start")


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
    assert http("DELETE", f"{url}/v1/videos/{video['id']}")[1]["status"] == "cancelled"

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
