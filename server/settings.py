"""Server settings: every field is a `FRAMECAST_*` environment variable and a `framecast serve` flag.

This is the only place server defaults live (model defaults live in models/config.py).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ServeError(Exception):
    """The server cannot start or run with these settings (invalid value, missing extra, port in use)."""


class Settings(BaseSettings):
    """What one `framecast serve` process serves, where, and with which limits."""

    model_config = SettingsConfigDict(env_prefix="FRAMECAST_", extra="ignore")

    model: str = "shapes"  # preset name or model directory
    lora: Annotated[list[str], NoDecode] = []  # comma-separated FILE[:SCALE] merged into the transformer at load
    text_device: str | None = None  # where the text encoder runs (None: the model's device)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    device: str | None = None  # None: the first GPU if there is one, else CPU
    # torch intra-op threads when the model runs on a CPU (None: OMP_NUM_THREADS when set, else all cores
    # but one: the last one serves sockets, audio and encoding, which would otherwise stall every op)
    cpu_threads: int | None = Field(default=None, ge=1)
    max_sessions: int = Field(default=4, ge=1)  # live realtime sessions per device
    max_running_jobs: int = Field(default=1, ge=0)  # job streams stepped beside live sessions
    data_dir: Path = Path("data")  # job database and rendered videos
    redis_url: str | None = None  # shared job queue for several processes (server/jobs/redis_store.py)
    api_keys: Annotated[list[str], NoDecode] = []  # comma-separated; empty = auth off
    cors_origins: Annotated[list[str], NoDecode] = []  # comma-separated allowed origins
    attn: str | None = None  # force an attention backend (read by models/kernels)
    token_secret: str | None = None  # HMAC key for client tokens; default derived from api_keys
    token_ttl_s: int = Field(default=600, ge=1)  # lifetime of a minted client token (and of its session)
    protect_metrics: bool = False  # with API keys set, /metrics needs the key too
    protect_docs: bool = False  # with API keys set, /docs, /redoc and /openapi.json need the key too
    max_message_bytes: int = Field(default=1 << 20, ge=1024)  # larger client messages: too_large
    max_connections: int = Field(default=64, ge=1)  # open sockets (HTTP + WebSocket); beyond: 503 / capacity
    max_connections_per_client: int = Field(default=16, ge=1)  # WebSockets open from one client address; beyond: capacity
    # proxies whose X-Forwarded-For names the client address (comma-separated IPs or networks, or *);
    # None: uvicorn's own default (its FORWARDED_ALLOW_IPS variable, else 127.0.0.1)
    forwarded_allow_ips: str | None = None
    refused_bytes_per_s: float = Field(default=64 << 10, gt=0)  # refusal budget per client address, refilled per second
    refused_bytes_burst: int = Field(default=1 << 20, ge=1)  # refusal budget at once (a refused message costs its size + 4 KiB)
    idle_timeout_s: float = Field(default=30.0, gt=0)  # a WebSocket without session.start this long is closed
    max_messages_per_s: float = Field(default=20.0, gt=0)  # sustained control messages per connection
    max_message_burst: int = Field(default=60, ge=1)  # control messages per connection at once
    max_pending_events: int = Field(default=256, ge=8)  # unsent JSON events per connection before it is closed
    max_image_bytes: int = Field(default=768 << 10, ge=1024)  # decoded input image size limit
    max_image_pixels: int = Field(default=4096 * 4096, ge=1)  # decoded input image pixel limit
    max_image_aspect: float = Field(default=16.0, ge=1)  # longest / shortest side of an input image
    default_job_seconds: float = Field(default=4.0, gt=0)  # when POST /v1/videos omits seconds
    max_job_seconds: float = Field(default=60.0, gt=0)  # longest video a job may request (extensions: in total)
    max_queued_jobs: int = Field(default=100, ge=1)  # POST /v1/videos beyond this many queued jobs: 429
    queue_retry_after_s: int = Field(default=10, ge=1)  # the Retry-After of that 429
    max_upload_bytes: int = Field(default=64 << 20, ge=1024)  # request bodies of POST /v1/videos[/extensions]
    job_max_attempts: int = Field(default=3, ge=1)  # interrupted jobs are re-queued up to this
    job_lease_s: float = Field(default=30.0, ge=2)  # Redis store: a claim not renewed this long is re-queued
    jpeg_quality: int = Field(default=85, ge=1, le=100)  # JPEG chunk format quality
    send_buffer_bytes: int | None = Field(default=None, ge=4096)  # kernel send buffer per socket (None: OS autotuning); smaller = fresher video for slow clients
    send_queue_chunks: int = Field(default=2, ge=1)  # per-session send queue, oldest dropped
    max_lead_s: float = Field(default=1.0, gt=0)  # most video a live session holds ahead of its viewer (one 12-frame chunk at 16 fps + margin); session.start may ask for more
    lead_margin_s: float = Field(default=0.25, ge=0)  # a live chunk is meant to land this long before its viewer needs it
    max_audio_ahead_s: float = Field(default=10.0, gt=0)  # streamed audio buffered past what the model heard; later audio is dropped
    stats_interval_s: float = Field(default=1.0, gt=0)  # how often `stats` events are sent
    shutdown_grace_s: float = Field(default=10.0, ge=0)  # time given to sessions on shutdown
    log_level: str = "info"

    @field_validator("api_keys", "cors_origins", "lora", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
