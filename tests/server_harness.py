"""The one server harness of the tests: in-process servers, `framecast serve` processes, WS helpers.

- `start_server(tmp_path, **settings)`: a real uvicorn in a thread on a free port, model `tiny`
  (one shared random-weight generator; `tiny_avatar_generator()` for the audio path), used as a
  context manager.
- `running_server(data_dir, ...)`: a `framecast serve` subprocess, waited for until `/healthz`,
  yields its base URL and stops it (SIGINT, then kill). `spawn_serve` / `wait_healthy` /
  `stop_process` are its parts, for tests that kill and restart servers.
- `http`, `connect`, `send`, `next_event`, `next_chunks`: plain HTTP and WebSocket helpers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import websockets

from client.protocol.chunks import parse_chunk

REPO = Path(__file__).resolve().parents[1]
MODEL = os.environ.get("FRAMECAST_TEST_MODEL", "tiny")  # the model of `framecast serve` processes
START_TIMEOUT_S = 360  # a `framecast serve` process imports torch and loads its model; on a loaded 2-core box that took > 180 s
MAX_BATCH = 4  # cache rows of the shared generator (max_sessions + max_running_jobs must fit)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- in-process server --------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def tiny_generator():
    """One random-weight `tiny` generator for every in-process server (they run one after another)."""
    from models import load_generator

    return load_generator("tiny", device="cpu", max_batch=MAX_BATCH)


@functools.lru_cache(maxsize=1)
def tiny_avatar_generator():
    """One random-weight `tiny-avatar` generator (audio input, audio cross-attention) for the avatar tests."""
    from models import load_generator

    return load_generator("tiny-avatar", device="cpu", max_batch=MAX_BATCH)


@contextlib.contextmanager
def sdk_client(url: str, timeout: float = 120.0):
    """The official `openai` SDK pointed at a test server's `/v1` (no key check, no retries)."""
    import openai

    with openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=timeout) as client:
        yield client


def start_server(tmp_path, generator=None, **overrides):
    """A real uvicorn on 127.0.0.1, a free port, model tiny or `generator` (a `ServerThread`: use as
    a context manager)."""
    from server.serve import ServerThread
    from server.settings import Settings

    base = dict(model="tiny", host="127.0.0.1", port=0, device="cpu", max_sessions=2, max_running_jobs=1,
                data_dir=tmp_path, stats_interval_s=0.2, shutdown_grace_s=5.0)
    return ServerThread(Settings(**{**base, **overrides}), generator=generator or tiny_generator())


# --- `framecast serve` processes ----------------------------------------------------------------

def serve_command(port: int, data_dir: Path, *extra: str, model: str = MODEL) -> list[str]:
    """The `framecast serve` command line on 127.0.0.1:port (extra flags appended)."""
    return [sys.executable, "-m", "client.cli", "serve", "--model", model, "--host", "127.0.0.1", "--port", str(port),
            "--data-dir", str(data_dir), *extra]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any FRAMECAST_ setting (plus `extra`)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("FRAMECAST_")}, **extra}


def spawn_serve(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a server process whose output is appended to `log_path` (a restart keeps earlier lines)."""
    with log_path.open("ab") as log:
        return subprocess.Popen(command, cwd=REPO, env=env or clean_env(), stdout=log, stderr=subprocess.STDOUT)


def wait_until(check, what: str, process: subprocess.Popen, log_path: Path, timeout: float = START_TIMEOUT_S) -> None:
    """Poll `check()` until true; raise with the log's tail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(OSError, httpx.TransportError):
            if check():
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready after {timeout} s:\n{log_path.read_text()[-3000:]}")


def wait_healthy(process: subprocess.Popen, url: str, log_path: Path, what: str = "framecast serve") -> None:
    wait_until(lambda: httpx.get(url + "/healthz", timeout=2).status_code == 200, what, process, log_path)


def stop_process(process: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 20) -> None:
    """Send `sig`, wait up to `timeout` s, then kill."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_server(data_dir: Path, api_keys: str | None = None, max_sessions: int | None = None) -> Iterator[str]:
    """Run `framecast serve` until the block ends; yields its base URL."""
    port = free_port()
    extra = (["--api-keys", api_keys] if api_keys else []) + (["--max-sessions", str(max_sessions)] if max_sessions else [])
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "server.log"
    url = f"http://127.0.0.1:{port}"
    process = spawn_serve(serve_command(port, data_dir, *extra), log_path)
    try:
        wait_healthy(process, url, log_path)
        yield url
    finally:
        stop_process(process)


def model_info(url: str, api_key: str | None = None) -> dict:
    """The first model of GET /v1/models."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.get(url + "/v1/models", headers=headers, timeout=10).json()["data"][0]


def ffprobe_video(path: Path) -> dict:
    """codec_name, width, height and the decoded frame count of an MP4, via ffprobe."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
         "stream=codec_name,width,height,nb_read_frames", "-of", "default=noprint_wrappers=1", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout
    fields = dict(line.split("=", 1) for line in out.strip().splitlines())
    return {"codec_name": fields["codec_name"], "width": int(fields["width"]), "height": int(fields["height"]),
            "frames": int(fields["nb_read_frames"])}


# --- HTTP and WebSocket helpers -----------------------------------------------------------------

def http(method: str, url: str, body: dict | bytes | None = None, headers: dict | None = None):
    """(status, parsed JSON or raw bytes) without raising on HTTP errors."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json",
                                                                                **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw, kind = response.status, response.read(), response.headers.get("content-type", "")
    except urllib.error.HTTPError as err:
        status, raw, kind = err.code, err.read(), err.headers.get("content-type", "")
    return status, (json.loads(raw) if "json" in kind else raw)


def connect(url: str, **kwargs):
    return websockets.connect(url, compression=None, max_size=None, open_timeout=30, **kwargs)


async def send(ws, message: dict) -> None:
    await ws.send(json.dumps(message))


async def next_event(ws, kind: str | None = None, timeout: float = 30.0) -> dict:
    """The next JSON event (of `kind` if given), skipping chunks and stats."""
    async def wait():
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):
                continue
            event = json.loads(message)
            if kind is None and event["type"] != "stats" or event["type"] == kind:
                return event

    return await asyncio.wait_for(wait(), timeout)


async def next_chunks(ws, n: int, timeout: float = 60.0, events: list | None = None) -> list:
    """The next n binary chunks, parsed; JSON events seen meanwhile go to `events`."""
    async def wait():
        chunks = []
        while len(chunks) < n:
            message = await ws.recv()
            if isinstance(message, bytes):
                chunks.append(parse_chunk(message))
            elif events is not None:
                events.append(json.loads(message))
        return chunks

    return await asyncio.wait_for(wait(), timeout)
