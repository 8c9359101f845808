"""Typed exceptions for everything the framecast server can answer with an error.

The server reports errors with a machine-readable `code` (realtime `error` events and REST error
bodies). `error_from_code` maps a code to the matching exception class, so callers can write
`except CapacityError:` instead of comparing strings; unknown codes become a plain
`FramecastError` that still carries the code.
"""

from __future__ import annotations

from typing import Any


class FramecastError(Exception):
    """An error reported by (or about) a framecast server.

    code:    the server's error code (`bad_request`, `capacity`, ...), or a client-side code
             (`connection_lost`, `job_failed`, `protocol`)
    message: the human-readable explanation
    status:  the HTTP status or WebSocket close code that came with it, when there was one
    """

    code = "error"

    def __init__(self, code: str | None, message: str, status: int | None = None):
        self.code = code or type(self).code
        self.message = message
        self.status = status
        super().__init__(f"{self.code}: {message}")


class BadRequestError(FramecastError):
    """The request was malformed (bad JSON, missing or wrong-typed fields, undecodable image)."""

    code = "bad_request"


class UnsupportedError(FramecastError):
    """The request asks for something this server or model cannot do."""

    code = "unsupported"


class TooLargeError(FramecastError):
    """A message, prompt or upload exceeded the server's size limit."""

    code = "too_large"


class UnauthorizedError(FramecastError):
    """Missing, wrong or expired API key / client token."""

    code = "unauthorized"


class CapacityError(FramecastError):
    """No session slot free (WebSocket close 1013 or HTTP 503); retry later."""

    code = "capacity"


class NotFoundError(FramecastError):
    """The job (or other resource) does not exist."""

    code = "not_found"


class InternalError(FramecastError):
    """The server failed while handling the request."""

    code = "internal"


class ConnectionLostError(FramecastError):
    """The connection to the server closed before the session ended normally."""

    code = "connection_lost"


class ProtocolError(FramecastError):
    """The server sent something that does not follow the framecast protocol."""

    code = "protocol"


class JobFailedError(FramecastError):
    """A video job ended as `failed` or `cancelled` while being waited for."""

    code = "job_failed"


class UsageError(Exception):
    """A client command cannot run as asked (bad argument, missing local file, wait timed out)."""


ERROR_CLASSES: dict[str, type[FramecastError]] = {
    cls.code: cls
    for cls in (
        BadRequestError,
        UnsupportedError,
        TooLargeError,
        UnauthorizedError,
        CapacityError,
        NotFoundError,
        InternalError,
        ConnectionLostError,
        ProtocolError,
        JobFailedError,
    )
}

# HTTP status -> error code, for error bodies that carry no code of their own
HTTP_STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "unauthorized",
    404: "not_found",
    413: "too_large",
    422: "bad_request",
    429: "capacity",
    501: "unsupported",
    503: "capacity",
}


def error_from_code(code: str | None, message: str, status: int | None = None) -> FramecastError:
    """The exception instance of the class registered for `code` (FramecastError if unknown)."""
    cls = ERROR_CLASSES.get(code or "", FramecastError)
    return cls(code, message, status)


def error_from_http(status: int, body: Any) -> FramecastError:
    """Build the typed exception for an HTTP error response.

    `body` is the decoded JSON (or text) of the response. Accepted shapes: `{"error": {"code",
    "message"}}`, `{"code", "message"}`, FastAPI's `{"detail": str | {...} | [validation errors]}`.
    When no code is present it is derived from the status.
    """
    code, message = _code_and_message(body)
    if not code:
        code = HTTP_STATUS_CODES.get(status, "internal" if status >= 500 else "bad_request")
    return error_from_code(code, message or f"HTTP {status}", status)


def _code_and_message(body: Any) -> tuple[str | None, str | None]:
    """Pull (code, message) out of any of the error body shapes a server may use."""
    if isinstance(body, str):
        return None, body.strip() or None
    if isinstance(body, list):  # FastAPI validation errors
        parts = []
        for item in body:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{where}: {item.get('msg', '')}" if where else str(item.get("msg", "")))
        return "bad_request", "; ".join(parts) or None
    if not isinstance(body, dict):
        return None, None
    if "error" in body:
        return _code_and_message(body["error"])
    if "detail" in body:
        return _code_and_message(body["detail"])
    code = body.get("code")
    message = body.get("message")
    return (str(code) if code else None), (str(message) if message is not None else None)
