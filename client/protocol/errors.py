"""One exception class per error kind, shared by the server (which raises them) and the Python
client (which raises the same classes whatever the transport).

Every error has a `code`, the same string in a realtime `error` event {code, message} and in a
REST error body `{"error": {"message", "type", "param", "code"}}` (OpenAI's shape). A class also
knows its HTTP status, its OpenAI error `type` and the WebSocket close code used when it ends a
session. `error_from_code` / `error_from_http` / `error_from_close` rebuild the exception on the
client side. Torch-free.
"""

from __future__ import annotations

from typing import Any

CLOSE_NORMAL = 1000  # session.stop, or the client went away
CLOSE_SHUTDOWN = 1001  # going away: the server is shutting down


class FramecastError(Exception):
    """An error reported by (or about) a framecast server.

    code:    machine-readable kind (`bad_request`, `capacity`, ...; the client adds `connection_lost`,
             `protocol`, `job_failed`)
    message: the human-readable explanation
    param:   the request field at fault, when there is one
    status:  the HTTP status or WebSocket close code that came with it (defaults to the class's)
    """

    code = "error"
    http_status = 500
    openai_type = "server_error"
    close_code = 1011  # internal error

    def __init__(self, message: str, *, param: str | None = None, status: int | None = None,
                 code: str | None = None):
        self.code = code or type(self).code
        self.message = message
        self.param = param
        self.status = status
        super().__init__(f"{self.code}: {message}")

    def event(self) -> dict[str, str]:
        """The realtime `error` event."""
        return {"type": "error", "code": self.code, "message": self.message}

    def body(self) -> dict[str, dict[str, Any]]:
        """The REST error body, in OpenAI's shape."""
        return {"error": {"message": self.message, "type": self.openai_type, "param": self.param, "code": self.code}}


class BadRequestError(FramecastError):
    """The request was malformed (bad JSON, missing or wrong-typed fields, undecodable image)."""

    code, http_status, openai_type, close_code = "bad_request", 400, "invalid_request_error", 1008


class UnsupportedError(FramecastError):
    """The request asks for something this server or model cannot do (unknown type, format, input)."""

    code, http_status, openai_type, close_code = "unsupported", 400, "invalid_request_error", 1003


class TooLargeError(FramecastError):
    """A message, prompt or upload exceeded the server's size limit."""

    code, http_status, openai_type, close_code = "too_large", 413, "invalid_request_error", 1009


class UnauthorizedError(FramecastError):
    """Missing, wrong or expired API key / client token."""

    code, http_status, openai_type, close_code = "unauthorized", 401, "authentication_error", 1008


class CapacityError(FramecastError):
    """No session slot free, or the server is shutting down (HTTP 503, close 1013); retry later."""

    code, http_status, openai_type, close_code = "capacity", 503, "server_error", 1013


class NotFoundError(FramecastError):
    """The job (or other resource) does not exist."""

    code, http_status, openai_type = "not_found", 404, "invalid_request_error"


class ConflictError(FramecastError):
    """The resource is not in a state that allows this (e.g. the content of an unfinished video)."""

    code, http_status, openai_type = "conflict", 409, "invalid_request_error"


class InternalError(FramecastError):
    """The server failed while handling the request."""

    code = "internal"


class ConnectionLostError(FramecastError):
    """Client side: the connection closed before the session ended normally."""

    code = "connection_lost"


class ProtocolError(FramecastError):
    """Client side: the server sent something that does not follow the framecast protocol."""

    code = "protocol"


class JobFailedError(FramecastError):
    """Client side: a video job ended as `failed` or `cancelled` while being waited for."""

    code = "job_failed"


ERROR_CLASSES: dict[str, type[FramecastError]] = {
    cls.code: cls
    for cls in (BadRequestError, UnsupportedError, TooLargeError, UnauthorizedError, CapacityError, NotFoundError,
                ConflictError, InternalError, ConnectionLostError, ProtocolError, JobFailedError)
}
# the codes a server sends (the rest are raised by the client about its own connection)
SERVER_CODES = ("bad_request", "unsupported", "too_large", "unauthorized", "capacity", "not_found", "conflict",
                "internal")
# WebSocket close code -> error code, for a server that closed without an `error` event
CLOSE_CODE_ERRORS = {1003: "unsupported", 1008: "unauthorized", 1009: "too_large", 1011: "internal", 1013: "capacity"}
# HTTP status -> error code, for an error body that carries no code of its own
HTTP_STATUS_CODES: dict[int, str] = {
    400: "bad_request", 401: "unauthorized", 403: "unauthorized", 404: "not_found", 409: "conflict",
    410: "not_found", 413: "too_large", 415: "unsupported", 422: "bad_request", 429: "capacity", 501: "unsupported",
    503: "capacity",
}


def error_from_code(code: str | None, message: str, status: int | None = None,
                    param: str | None = None) -> FramecastError:
    """The exception of the class registered for `code` (a FramecastError carrying it if unknown)."""
    cls = ERROR_CLASSES.get(code or "")
    if cls is None:
        return FramecastError(message, param=param, status=status, code=code)
    return cls(message, param=param, status=status)


def error_from_http(status: int, body: Any) -> FramecastError:
    """The exception for an HTTP error response; `body` is its decoded JSON (or text).

    The server answers `{"error": {"message", "type", "param", "code"}}`; a proxy in between may
    answer plain text, whose code is then derived from the status.
    """
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code, message, param = error.get("code"), error.get("message"), error.get("param")
    else:
        code, message, param = None, (body.strip() if isinstance(body, str) else None), None
    code = code or HTTP_STATUS_CODES.get(status, "internal" if status >= 500 else "bad_request")
    return error_from_code(str(code), str(message or f"HTTP {status}"), status, param)


def error_from_close(close_code: int | None, reason: str) -> FramecastError:
    """The exception for a WebSocket the server closed without an `error` event."""
    if close_code in CLOSE_CODE_ERRORS:
        return error_from_code(CLOSE_CODE_ERRORS[close_code], reason or f"connection closed with code {close_code}",
                               close_code)
    return ConnectionLostError(f"connection closed unexpectedly (code {close_code})", status=close_code)
