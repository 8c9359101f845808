"""A real `framecast serve` subprocess on loopback for the client and browser tests.

`running_server(data_dir, ...)` starts `framecast serve --model tiny` on a free port, waits for
`/healthz`, yields the base URL and stops the server (SIGINT, then kill). `require_server()`
skips the calling test only while the server package is not importable in this checkout.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL = os.environ.get("FRAMECAST_TEST_MODEL", "tiny")
START_TIMEOUT_S = 180


def require_server() -> None:
    """Skip (with the reason) while server.app / server.cli cannot be imported."""
    for name in ("server.app", "server.cli"):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            pytest.skip(f"{name} is not importable yet ({exc}); these tests need the real server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(data_dir: Path, api_keys: str | None = None, max_sessions: int | None = None) -> Iterator[str]:
    """Run `framecast serve` until the block ends; yields its base URL."""
    require_server()
    port = free_port()
    command = [sys.executable, "-m", "client.cli", "serve", "--model", MODEL, "--host", "127.0.0.1",
               "--port", str(port), "--data-dir", str(data_dir)]
    if api_keys:
        command += ["--api-keys", api_keys]
    if max_sessions:
        command += ["--max-sessions", str(max_sessions)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMECAST_")}
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "server.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_healthy(process, url, log_path)
            yield url
        finally:
            _stop(process)


def _wait_healthy(process: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"framecast serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"framecast serve not healthy after {START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
