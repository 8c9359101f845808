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
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.server_harness import (REPO, clean_env, free_port, serve_command, spawn_serve, stop_process, wait_healthy,
                                  wait_until)

GATEWAY_TEMPLATE = REPO / "docker" / "gateway" / "framecast.conf.template"
_RENDERING = re.compile(r"job (video_[0-9a-f]+): rendering \(attempt (\d+)\)")


def require(binary: str) -> str:
    path = shutil.which(binary) or next((p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if os.access(p, os.X_OK)), None)
    if path is None:
        pytest.skip(f"{binary} is not installed (scripts/setup.sh --dev installs it)")
    return path


def require_redis_client() -> None:
    pytest.importorskip("redis", reason="the redis client is not installed (pip install 'framecast[redis]')")


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
        wait_until(ping, "redis-server", process, log, timeout=20)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(process, signal.SIGTERM)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A module's own redis-server (skips without redis-server or the redis client): import it into the module."""
    require_redis_client()
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


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
        env = clean_env(FRAMECAST_JOB_LEASE_S=str(self.lease_s), FRAMECAST_STATS_INTERVAL_S="0.5",
                        FRAMECAST_SHUTDOWN_GRACE_S="3",
                        OMP_NUM_THREADS="1")  # two workers on a small CPU box: no thread oversubscription
        command = serve_command(self.port, self.data_dir, "--device", "cpu", "--redis-url", self.redis_url,
                                "--max-sessions", str(self.max_sessions), model="tiny")
        self.process = spawn_serve(command, self.log, env)  # log appended: a restarted worker keeps earlier lines

    def wait_ready(self) -> None:
        wait_healthy(self.process, self.url, self.log, self.name)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no drain, no re-queue, the job's claim simply stops being renewed."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

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
        wait_until(lambda: httpx.get(url + "/gateway/healthz", timeout=2).status_code == 200, "nginx", process, log, 20)
        yield url
    finally:
        stop_process(process, signal.SIGTERM)  # SIGTERM: fast shutdown, open WebSockets included
