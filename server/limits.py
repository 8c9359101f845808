"""Per-connection limits of the realtime socket: a control-message rate budget and Origin checks.

The budget is a token bucket: `burst` messages at once, refilled at `rate` per second. A client
over it is disconnected (`capacity`, close 1013) instead of being answered message by message,
so a flood costs the server a bounded amount of work and memory.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit


class RateBudget:
    """Token bucket; `take()` is False once the client sent more than the budget allows."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        self.rate = rate  # messages per second, sustained
        self.burst = burst  # messages allowed at once
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """A WebSocket upgrade's `Origin` is fine when absent (not a browser), when it is the server's
    own origin (same host and port as the `Host` header), or when it is listed in `allowed`
    (FRAMECAST_CORS_ORIGINS; `*` allows any)."""
    if origin is None:
        return True
    if "*" in allowed or origin.rstrip("/") in (a.rstrip("/") for a in allowed):
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc or not host:
        return False
    default_port = {"http": 80, "https": 443}[parts.scheme]
    return _host_port(parts.netloc, default_port) == _host_port(host, default_port)


def _host_port(netloc: str, default_port: int) -> tuple[str, int] | None:
    """('host', port) of 'host[:port]' (lower-cased; IPv6 in brackets); None if malformed."""
    try:
        parts = urlsplit("//" + netloc)
        return (parts.hostname or "").lower(), parts.port or default_port
    except ValueError:
        return None
