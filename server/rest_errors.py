"""Every REST error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

Routes raise the protocol's error classes (client/protocol/errors.py), the same ones the
realtime socket reports, so `code` has the same values on both. `install(app)` also turns
FastAPI's validation errors (422, naming the field in `param`), Starlette's HTTP errors and any
unexpected exception (500, logged, never sent) into that body. The official OpenAI SDK maps the
status to its error classes (400 BadRequestError, 401 AuthenticationError, 404 NotFoundError,
409 ConflictError, 422 UnprocessableEntityError, >= 500 InternalServerError).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from client.protocol.errors import (
    HTTP_STATUS_CODES, BadRequestError, FramecastError, InternalError, UnauthorizedError, error_from_code,
)

log = logging.getLogger("framecast.server")
VALIDATION_STATUS = 422  # a request field with a bad value (FastAPI's status for it)


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict:
    """The OpenAI error object for an HTTP status (its code derived from the status if not given)."""
    code = code or HTTP_STATUS_CODES.get(status, "internal" if status >= 500 else "bad_request")
    return error_from_code(code, message, status, param).body()


def api_error(status: int, message: str, *, code: str | None = None, param: str | None = None,
              headers: dict[str, str] | None = None) -> FramecastError:
    """The error class for `code` (else the status's) answered with `status` (and `headers`)."""
    code = code or HTTP_STATUS_CODES.get(status, "internal" if status >= 500 else "bad_request")
    exc = error_from_code(code, message, status, param)
    exc.headers = headers
    return exc


def invalid(param: str, message: str, status: int = VALIDATION_STATUS, code: str = "bad_request") -> FramecastError:
    """A request field with a bad value: 422 (or `status`) naming the field."""
    return api_error(status, f"field {param!r}: {message}", code=code, param=param)


def error_response(exc: FramecastError) -> JSONResponse:
    status = exc.status or exc.http_status
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, UnauthorizedError) else None
    headers = {**(headers or {}), **(getattr(exc, "headers", None) or {})}
    return JSONResponse(exc.body(), status, headers=headers or None)


def _validation_error(exc: RequestValidationError) -> BadRequestError:
    """FastAPI's validation errors as one 422 naming the first field (the body is never echoed)."""
    first = exc.errors()[0] if exc.errors() else {}
    # loc: ("body" | "query" | "path", field, ...); an undecodable body has ("body", offset)
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path") and not isinstance(p, int)]
    message = first.get("msg", "invalid request")
    if not loc:
        return BadRequestError(message, status=VALIDATION_STATUS)
    return invalid(".".join(loc), message)


def install(app: FastAPI) -> None:
    """Route every error of `app` through the OpenAI error body."""

    @app.exception_handler(FramecastError)
    async def _framecast_error(_request: Request, exc: FramecastError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(InternalError("internal server error"))
