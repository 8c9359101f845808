"""Limits of the realtime socket: a control-message rate budget, a per-client refusal budget and
Origin checks.

Both budgets are token buckets (`burst` at once, refilled at `rate` per second). A connection over
its message budget is disconnected (`capacity`, close 1013) instead of being answered message by
message, so a flood costs the server a bounded amount of work and memory. The refusal budget
(`ClientBudgets`) is shared by every connection from one client address and is spent in bytes by
the messages the server refused: once it is spent, the server stops reading that client's
suspect sockets until it has refilled, so a client sending input that is refused over and over
(a 16 KB image refused at its header, 90 times a second) is answered at the budget's pace and
costs the server nothing while it waits (TCP backpressure).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from urllib.parse import urlsplit

REFUSAL_OVERHEAD_BYTES = 4096  # what a refused message costs on top of its size (parse, answer, send)
MAX_TRACKED_CLIENTS = 4096  # refusal budgets kept; beyond, the longest-unused one is forgotten


class RateBudget:
    """Token bucket; `take()` is False once the client sent more than the budget allows;
    `charge(cost)` / `wait_s()` spend a weighted cost and say how long until it is paid back."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        self.rate = rate  # units (messages, bytes) refilled per second
        self.burst = burst  # units allowed at once
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def take(self) -> bool:
        self._refill()
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def charge(self, cost: float) -> None:
        """Spend `cost` even past zero (a debt, at most one `burst` deep, that must refill first)."""
        self._refill()
        self._tokens = max(self._tokens - cost, -self.burst)

    def wait_s(self) -> float:
        """Seconds until the budget is out of debt (0 when it is not in debt)."""
        self._refill()
        return max(0.0, -self._tokens) / self.rate

    @property
    def full(self) -> bool:
        self._refill()
        return self._tokens >= self.burst


class ClientBudgets:
    """Refusal budgets in bytes, one per client address, shared by all its connections.

    A budget that has refilled completely is the same as none, so those are forgotten; at most
    MAX_TRACKED_CLIENTS are kept (an address flood evicts the least recently charged first).
    """

    def __init__(self, rate: float, burst: float, clock=time.monotonic):
        self.rate = rate  # bytes per second refilled
        self.burst = burst  # bytes of refused messages allowed at once
        self._clock = clock
        self._budgets: OrderedDict[str, RateBudget] = OrderedDict()

    def charge(self, client: str | None, message_bytes: int) -> None:
        """A message of `message_bytes` from `client` was refused."""
        budget = self._budgets.pop(client, None) or RateBudget(self.rate, self.burst, clock=self._clock)
        budget.charge(message_bytes + REFUSAL_OVERHEAD_BYTES)
        self._budgets[client] = budget  # most recently charged last
        while len(self._budgets) > MAX_TRACKED_CLIENTS:
            self._budgets.popitem(last=False)

    def wait_s(self, client: str | None) -> float:
        """Seconds `client`'s suspect sockets stay unread (0: its budget is not spent)."""
        budget = self._budgets.get(client)
        if budget is None:
            return 0.0
        if budget.full:
            del self._budgets[client]
            return 0.0
        return budget.wait_s()

    def __len__(self) -> int:
        return len(self._budgets)


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
