"""ASGI middleware: HTTP request bodies over a byte limit get 413 (declared or streamed).

The rest of an over-limit body is read and dropped (up to `DRAIN_BYTES`) before the 413 is sent:
closing a socket that still has unread request bytes makes the kernel answer with a TCP reset,
and a client still uploading would then see "connection reset" instead of the 413.
"""

from __future__ import annotations

import json

from server.rest_errors import error_body

DRAIN_BYTES = 64 << 20  # past this much an over-limit upload is cut off rather than read to its end


class BodySizeLimit:
    """Reject HTTP requests whose body exceeds `max_bytes` with 413 before a router parses them;
    multipart POST requests to `upload_paths` (file uploads) may carry up to `upload_max_bytes`."""

    def __init__(self, app, max_bytes: int, upload_paths: tuple[str, ...] = (), upload_max_bytes: int = 0):
        self.app = app
        self.max_bytes = max_bytes
        self.upload_paths = upload_paths
        self.upload_max_bytes = max(upload_max_bytes, max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        upload = (scope.get("method") == "POST" and scope.get("path", "").rstrip("/") in self.upload_paths
                  and headers.get(b"content-type", b"").startswith(b"multipart/form-data"))
        limit = self.upload_max_bytes if upload else self.max_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _drain(receive)
            return await self._reject(send, limit)
        received = 0
        too_large = False  # the body went over the limit: the app's answer is replaced by the 413
        responded = False

        async def limited_receive():
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # a chunked body has no declared length to check
                    too_large = True
                    # the app sees a truncated body and answers with a quiet 4xx (dropped): no traceback
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message):
            nonlocal responded
            if too_large and not responded:
                return
            responded = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not too_large or responded:
                raise
        if too_large and not responded:
            await _drain(receive)
            await self._reject(send, limit)

    async def _reject(self, send, limit: int) -> None:
        body = json.dumps(error_body(413, f"request body over the {limit}-byte limit")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


async def _drain(receive) -> None:
    """Read and drop what is left of the request body, up to DRAIN_BYTES."""
    dropped = 0
    while dropped <= DRAIN_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            return
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
