"""Helpers for the server tests: one shared tiny generator, an in-process server, WS client utilities."""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import urllib.request

import websockets

from client.chunk_format import parse_chunk
from server.serve import ServerThread
from server.settings import Settings

MAX_BATCH = 4  # cache rows of the shared generator (max_sessions + max_running_jobs must fit)


@functools.lru_cache(maxsize=1)
def tiny_generator():
    """One random-weight `tiny` generator for every in-process server (they run one after another)."""
    from models import load_generator

    return load_generator("tiny", device="cpu", max_batch=MAX_BATCH)


def start_server(tmp_path, **overrides) -> ServerThread:
    """A real uvicorn on 127.0.0.1, a free port, model tiny (use as a context manager)."""
    base = dict(model="tiny", host="127.0.0.1", port=0, device="cpu", max_sessions=2, max_running_jobs=1,
                data_dir=tmp_path, stats_interval_s=0.2, shutdown_grace_s=5.0)
    return ServerThread(Settings(**{**base, **overrides}), generator=tiny_generator())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
