"""Run the app under uvicorn with framecast's transport settings and graceful shutdown.

uvicorn's own shutdown closes WebSockets with 1012 before the app hears about it, so SIGTERM /
SIGINT first run `drain` (session.done reason `shutdown`, chunk in flight finished, jobs parked)
and only then let uvicorn stop. A second signal forces the exit.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from types import FrameType

import uvicorn

from server.app import create_app, drain, load_model
from server.settings import Settings

log = logging.getLogger("framecast.server")


def uvicorn_config(app, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=settings.host, port=settings.port,
        ws_per_message_deflate=False,  # compression makes binary video ~20x slower
        ws_max_size=16 * settings.max_message_bytes,  # bigger than the protocol limit: we answer too_large
        ws_max_queue=4,  # unread incoming messages per socket: the reader stops reading the socket beyond
        limit_concurrency=settings.max_connections + 1,  # counts the new socket itself: HTTP beyond gets 503
        log_level="warning" if settings.log_level == "info" else settings.log_level,
        timeout_graceful_shutdown=settings.shutdown_grace_s + 5,
        lifespan="on",
        forwarded_allow_ips=settings.forwarded_allow_ips,  # per-client limits key on the address it trusts
    )


class FramecastServer(uvicorn.Server):
    """uvicorn.Server that drains framecast before shutting down and logs one startup line."""

    def __init__(self, config: uvicorn.Config):
        super().__init__(config)
        self.draining = False
        self.ready = threading.Event()  # set once listening (tests and benchmarks wait on it)

    @property
    def port(self) -> int:
        return self.servers[0].sockets[0].getsockname()[1]

    async def startup(self, sockets=None) -> None:
        settings = getattr(self.config.app.state, "settings", None)
        if sockets is None and settings is not None and settings.send_buffer_bytes:
            sock = self.config.bind_socket()  # accepted connections inherit its send buffer size
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.send_buffer_bytes)
            sockets = [sock]
        await super().startup(sockets)
        if self.should_exit:
            return
        state = getattr(self.config.app.state, "framecast", None)
        if state is not None:
            info, s = state.info, state.settings
            log.info("framecast serving %s (%dx%d, %d fps) on %s at http://%s:%d/ (max %d sessions, auth %s)",
                     info.name, info.width, info.height, info.fps, info.device, s.host, self.port,
                     s.max_sessions, "on" if state.auth.enabled else "off")
        self.ready.set()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        state = getattr(self.config.app.state, "framecast", None)
        if self.draining or state is None:
            return super().handle_exit(sig, frame)
        self.draining = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return super().handle_exit(sig, frame)
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain_then_exit(state)))

    async def _drain_then_exit(self, state) -> None:
        log.info("shutting down: draining live sessions")
        try:
            await drain(state)
        finally:
            self.should_exit = True


def run(settings: Settings) -> None:
    """Load the model, then serve until SIGTERM / SIGINT (blocking)."""
    generator = load_model(settings)
    server = FramecastServer(uvicorn_config(create_app(settings, generator=generator), settings))
    server.run()


class ServerThread:
    """An in-process server on a background thread (tests, `bench serve`)."""

    def __init__(self, settings: Settings, generator=None):
        self.app = create_app(settings, generator=generator)
        self.server = FramecastServer(uvicorn_config(self.app, settings))
        self.thread = threading.Thread(target=self.server.run, name="framecast-server", daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        if not self.server.ready.wait(120):
            raise RuntimeError("server did not start")
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}/v1/realtime"

    def __exit__(self, *exc) -> None:
        """Stop and wait for the server to be gone, its device thread included (see app._stop)."""
        self.server.should_exit = True
        self.thread.join()

