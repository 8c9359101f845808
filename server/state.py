"""The objects one app shares between its routers (stored as `app.state.framecast`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from models.generator import ModelInfo
from server.auth import Authenticator
from server.engine import Engine
from server.jobs.runner import JobRunner
from server.limits import ClientBudgets
from server.jobs.store import JobStore
from server.metrics import Metrics
from server.session import Session
from server.settings import Settings


@dataclass(eq=False)
class ServerState:
    settings: Settings
    info: ModelInfo  # what the loaded model is and can do
    engine: Engine
    store: JobStore
    runner: JobRunner
    auth: Authenticator
    metrics: Metrics
    pool: ThreadPoolExecutor  # encoders and MP4 writers
    budgets: ClientBudgets  # refusal budgets per client address (server/limits.py)
    connections: set = field(default_factory=set)  # open RealtimeConnection objects
    admitting: bool = True  # False once shutdown began

    @property
    def sessions(self) -> list[Session]:
        """Live realtime sessions (not those ended and waiting for their socket to close)."""
        return [c.session for c in self.connections if c.session is not None and not c.session.done]

    @property
    def max_prompt_chars(self) -> int:
        return self.info.max_prompt_chars
