"""The exceptions the Python client raises, one hierarchy whatever the transport.

They are the wire protocol's own classes (client/protocol/errors.py: the server raises the same
ones), so `except CapacityError:` works for a refused WebSocket, a 503 from REST and a `capacity`
error event alike. `UsageError` is the client CLI's own: an argument or local file it cannot use.
"""

from __future__ import annotations

from client.protocol.errors import (
    BadRequestError, CapacityError, ConflictError, ConnectionLostError, FramecastError, InternalError,
    JobFailedError, NotFoundError, ProtocolError, TooLargeError, UnauthorizedError, UnsupportedError,
    error_from_close, error_from_code, error_from_http,
)

__all__ = [
    "BadRequestError", "CapacityError", "ConflictError", "ConnectionLostError", "FramecastError", "InternalError",
    "JobFailedError", "NotFoundError", "ProtocolError", "TooLargeError", "UnauthorizedError", "UnsupportedError",
    "UsageError", "error_from_close", "error_from_code", "error_from_http",
]


class UsageError(Exception):
    """A client command cannot run as asked (bad argument, missing local file, wait timed out)."""
