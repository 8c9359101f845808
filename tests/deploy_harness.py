"""Processes for the deployment tests: a throwaway redis-server, `framecast serve` workers sharing
it, and nginx running the repo's gateway config (docker/gateway/framecast.conf.template).

Everything binds to 127.0.0.1 on free ports, lives in a temp directory and is stopped (or killed)
when its context ends. `require(binary)` skips the calling test when a system binary is missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
GATEWAY_TEMPLATE = REPO / "docker" / "gateway" / "framecast.conf.template"
START_TIMEOUT_S = 180
_RENDERING = re.compile(r"job (video_[0-9a-f]+): rendering \(attempt (\d+)\)")


def require(binary: str) -> str:
    path = shutil.which(binary) or next((p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if os.access(p, os.X_OK)), None)
    if path is None:
        pytest.skip(f"{binary} is not installed (scripts/setup.sh --dev installs it)")
    return path


def require_redis_client() -> None:
    pytest.importorskip("redis", reason="the redis client is not installed (pip install 'framecast[redis]')")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(check, what: str, process: subprocess.Popen, log: Path, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError, httpx.TransportError):
            if check():
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def redis_server(tmp: Path):
    """A redis-server on a free loopback port, no persistence; yields its URL."""
    binary = require("redis-server")
    tmp.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), tmp / "redis.log"
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                "--dir", str(tmp), "--logfile", str(log)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    log.touch()

    def ping() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    try:
        _wait(ping, "redis-server", process, log, timeout=20)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(process)


class Worker:
    """One `framecast serve --model tiny` process; start() returns at once, wait_ready() blocks."""

    def __init__(self, name: str, data_dir: Path, log_dir: Path, redis_url: str, max_sessions: int, lease_s: float):
        self.name, self.data_dir, self.redis_url = name, data_dir, redis_url
        self.max_sessions, self.lease_s = max_sessions, lease_s
        self.log = log_dir / f"{name}.log"
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMECAST_")}
        env.update(FRAMECAST_JOB_LEASE_S=str(self.lease_s), FRAMECAST_STATS_INTERVAL_S="0.5",
                   FRAMECAST_SHUTDOWN_GRACE_S="3",
                   OMP_NUM_THREADS="1")  # two workers on a small CPU box: no thread oversubscription
        command = [sys.executable, "-m", "client.cli", "serve", "--model", "tiny", "--device", "cpu",
                   "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.data_dir),
                   "--redis-url", self.redis_url, "--max-sessions", str(self.max_sessions)]
        with self.log.open("ab") as log:  # appended: a restarted worker keeps its earlier lines
            self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        _wait(lambda: httpx.get(self.url + "/healthz", timeout=2).status_code == 200, self.name, self.process, self.log)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no drain, no re-queue, the job's claim simply stops being renewed."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, signal.SIGINT)

    def executions(self) -> Counter:
        """job id -> times this worker started rendering it (from its log)."""
        return Counter(m.group(1) for m in _RENDERING.finditer(self.log.read_text(errors="replace")))


def render_gateway_config(upstreams: list[str], listen: str) -> str:
    """The repo's gateway template with its two placeholders filled (what envsubst does)."""
    text = GATEWAY_TEMPLATE.read_text()
    servers = " ".join(f"server {u} max_fails=1 fail_timeout=5s;" for u in upstreams)
    return text.replace("${FRAMECAST_UPSTREAMS}", servers).replace("${FRAMECAST_GATEWAY_LISTEN}", listen)


def nginx_main_config(prefix: Path, include: Path) -> str:
    """A minimal nginx.conf whose pid, logs and temp files all live under `prefix`."""
    temps = "\n".join(f"    {kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (f"worker_processes 1;\npid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'} info;\n"
            f"events {{ worker_connections 256; }}\n"
            f"http {{\n    access_log {prefix / 'access.log'};\n{temps}\n    include {include};\n}}\n")


def write_gateway(prefix: Path, upstreams: list[str], port: int) -> Path:
    """Write the rendered gateway and its main config under `prefix`; returns the main config."""
    prefix.mkdir(parents=True, exist_ok=True)
    site = prefix / "framecast.conf"
    site.write_text(render_gateway_config(upstreams, f"127.0.0.1:{port}"))
    main = prefix / "nginx.conf"
    main.write_text(nginx_main_config(prefix, site))
    return main


@contextlib.contextmanager
def nginx_gateway(prefix: Path, upstreams: list[str]):
    """nginx in the foreground (`daemon off;`) with the repo's gateway; yields its base URL."""
    binary = require("nginx")
    port = free_port()
    main = write_gateway(prefix, upstreams, port)
    log = prefix / "nginx.stderr"
    with log.open("wb") as out:
        process = subprocess.Popen([binary, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(main),
                                    "-g", "daemon off;"], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: httpx.get(url + "/gateway/healthz", timeout=2).status_code == 200, "nginx", process, log, 20)
        yield url
    finally:
        _stop(process)  # SIGTERM: fast shutdown, open WebSockets included
