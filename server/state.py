"""The objects one app shares between its routers (stored as `app.state.framecast`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from models.config import StreamConfig
from server.auth import Authenticator
from server.engine import Engine
from server.jobs.runner import JobRunner
from server.jobs.store import JobStore
from server.metrics import Metrics
from server.session import Session
from server.settings import Settings


@dataclass(eq=False)
class ServerState:
    settings: Settings
    info: Any  # the generator's ModelInfo
    engine: Engine
    store: JobStore
    runner: JobRunner
    auth: Authenticator
    metrics: Metrics
    pool: ThreadPoolExecutor  # encoders and MP4 writers
    device: str  # where the model runs, for logs
    connections: set = field(default_factory=set)  # open RealtimeConnection objects
    admitting: bool = True  # False once shutdown began

    @property
    def sessions(self) -> list[Session]:
        """Live realtime sessions."""
        return [c.session for c in self.connections if c.session is not None]

    @property
    def max_prompt_chars(self) -> int:
        """From the model's stream config when the generator exposes it, else the config default."""
        config = getattr(self.engine.gen, "cfg", None)
        stream = getattr(config, "stream", None) or StreamConfig()
        return stream.max_prompt_chars
