"""Protocol error codes and the WebSocket close codes that go with them (docs/PROTOCOL.md)."""

from __future__ import annotations

# error code -> close code used when the error ends the session
CLOSE_CODES: dict[str, int] = {
    "bad_request": 1008,  # policy violation
    "unsupported": 1003,  # unsupported data
    "too_large": 1009,  # message too big
    "unauthorized": 1008,  # policy violation
    "capacity": 1013,  # try again later
    "internal": 1011,  # internal error
}
CLOSE_NORMAL = 1000  # session.stop, or the client went away
CLOSE_SHUTDOWN = 1001  # going away: the server is shutting down


class ProtocolError(Exception):
    """A client mistake (or refusal) reported as an `error` event {code, message}."""

    def __init__(self, code: str, message: str):
        if code not in CLOSE_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    def event(self) -> dict:
        return {"type": "error", "code": self.code, "message": self.message}
