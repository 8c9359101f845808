"""`create_app(settings)`: the FastAPI app, its lifespan (load model, start engine/jobs) and drain."""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from models.stream_api import StreamingModel
from server import rest_errors
from server.auth import Authenticator
from server.body_limit import BodySizeLimit
from server.engine import Engine
from server.jobs.files import JobFiles
from server.jobs.runner import JobRunner
from server.jobs.open_store import open_job_store
from server.limits import ClientBudgets
from server.metrics import Metrics
from server.mp4_writer import remove_stale_partials
from server.routes import realtime, system, tokens, videos
from server.settings import Settings
from server.state import ServerState

log = logging.getLogger("framecast.server")
UPLOAD_PATHS = ("/v1/videos", "/v1/videos/extensions")  # may carry files up to FRAMECAST_MAX_UPLOAD_BYTES


def load_model(settings: Settings) -> StreamingModel:
    """The streaming generator, with a cache row per session and per running job."""
    from models import load_generator

    generator = load_generator(settings.model, device=settings.device, attn=settings.attn,
                               max_batch=settings.max_sessions + settings.max_running_jobs, lora=settings.lora,
                               text_device=settings.text_device)
    set_cpu_threads(settings, generator)
    return generator


def set_cpu_threads(settings: Settings, generator: StreamingModel) -> None:
    """On a CPU device, give torch `settings.cpu_threads` intra-op threads (default: OMP_NUM_THREADS when
    set, else all cores but one). A server is never only the model: its event loop, audio and encoders
    need a core too, and an op whose threads include one preempted by them waits for it (on 2 cores,
    2 torch threads made the avatar's steps 2-3x slower than the model alone; docs/BENCHMARKS.md)."""
    import torch

    if not str(generator.info.device).startswith("cpu"):
        return
    threads = settings.cpu_threads
    if threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = max(cores - 1, 1)
    torch.set_num_threads(threads)
    log.info("model on cpu: %d torch thread(s)", threads)


def create_app(settings: Settings | None = None, generator: StreamingModel | None = None) -> FastAPI:
    """A new app; `generator` skips loading (tests share one). Nothing starts until its lifespan."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = await _start(settings, generator)
        app.state.framecast = state
        try:
            yield
        finally:
            await drain(state)
            await _stop(state)

    docs = {"docs_url": None, "redoc_url": None, "openapi_url": None} if settings.protect_docs else {}
    app = FastAPI(title="framecast", version="0.1.0", lifespan=lifespan,
                  description="Real-time streaming video generation: realtime WebSocket and video jobs.", **docs)
    if settings.protect_docs:
        system.add_protected_docs(app)
    app.state.settings = settings
    app.include_router(system.router)
    app.include_router(videos.router)
    app.include_router(tokens.router)
    app.include_router(realtime.router)
    if system.WEB_DIR.is_dir():
        app.mount("/web", StaticFiles(directory=system.WEB_DIR), name="web")
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"])
    rest_errors.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_message_bytes, upload_paths=UPLOAD_PATHS,
                       upload_max_bytes=settings.max_upload_bytes)
    return app


async def _start(settings: Settings, generator: StreamingModel | None) -> ServerState:
    if generator is None:
        generator = await asyncio.to_thread(load_model, settings)
    info = generator.info
    metrics = Metrics()
    store = open_job_store(settings)  # Redis when FRAMECAST_REDIS_URL is set, else SQLite
    for job in store.recover(max_attempts=settings.job_max_attempts):
        log.warning("job %s was interrupted: now %s", job.id, job.status)
    # alone on the data dir (SQLite) every partial file is a dead writer's; with a shared Redis
    # queue other processes may be writing theirs, so only files idle for two leases go
    stale_after = 2 * settings.job_lease_s if settings.redis_url else 0.0
    removed = remove_stale_partials(settings.data_dir / "videos", older_than_s=stale_after)
    if removed:
        log.warning("removed %d partial video file(s) left by an interrupted run", removed)
    engine = Engine(generator, max_sessions=settings.max_sessions, max_running_jobs=settings.max_running_jobs,
                    lead_margin_s=settings.lead_margin_s, max_lead_s=settings.max_lead_s, metrics=metrics)
    engine.start()
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2), thread_name_prefix="framecast-encode")
    runner = JobRunner(store=store, engine=engine, pool=pool, files=JobFiles(settings.data_dir),
                       width=info.width, height=info.height, fps=info.fps,
                       max_image_bytes=settings.max_image_bytes, max_image_pixels=settings.max_image_pixels,
                       max_clip_seconds=settings.max_job_seconds)
    runner.start()
    auth = Authenticator(settings.api_keys, token_ttl_s=settings.token_ttl_s, secret=settings.token_secret)
    if not auth.enabled and not settings.is_loopback:
        log.warning("listening on %s without FRAMECAST_API_KEYS: anyone who can reach it can use it", settings.host)
    return ServerState(settings=settings, info=info, engine=engine, store=store, runner=runner, auth=auth,
                       metrics=metrics, pool=pool,
                       budgets=ClientBudgets(settings.refused_bytes_per_s, settings.refused_bytes_burst))


async def drain(state: ServerState) -> None:
    """Graceful shutdown, idempotent: stop admitting, park jobs, finish the chunk in flight,
    send `session.done` (reason shutdown) to every live session and wait for their sockets."""
    if not state.admitting:
        return
    state.admitting = False
    await state.runner.stop()
    await asyncio.to_thread(state.engine.stop, state.settings.shutdown_grace_s)
    connections = list(state.connections)
    await asyncio.gather(*(c.shutdown() for c in connections), return_exceptions=True)
    deadline = asyncio.get_running_loop().time() + state.settings.shutdown_grace_s
    while state.connections and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)


async def _stop(state: ServerState) -> None:
    """Release everything. The device thread is waited for however long its step in flight takes:
    a (daemon) thread still inside a torch op when the interpreter exits aborts the whole process
    ("terminate called without an active exception", exit code 134) once its output is written."""
    await asyncio.to_thread(state.engine.stop)
    state.pool.shutdown(wait=True, cancel_futures=True)
    state.store.close()
