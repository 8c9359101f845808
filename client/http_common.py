"""What the realtime and jobs clients share: the server address, auth headers, error mapping."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

import httpx

from client.errors import ProtocolError, error_from_http

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "FRAMECAST_URL"
API_KEY_ENV = "FRAMECAST_API_KEY"


def resolve_base_url(url: str | None = None) -> str:
    """The server's base http(s) URL: `url`, else $FRAMECAST_URL, else http://127.0.0.1:8000.

    `ws://`/`wss://` are accepted and turned into `http://`/`https://`; a missing scheme means
    http; a trailing slash is dropped. Raises ValueError for other schemes or a missing host.
    """
    url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https"):
        raise ValueError(f"server URL must be http(s) or ws(s), got {url!r}")
    if not parts.netloc:
        raise ValueError(f"server URL has no host: {url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def websocket_url(base_url: str, path: str) -> str:
    """`ws(s)://host/path` for a base http(s) URL."""
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, "", ""))


def resolve_api_key(api_key: str | None = None) -> str | None:
    """`api_key`, else $FRAMECAST_API_KEY, else None (auth off)."""
    return api_key or os.environ.get(API_KEY_ENV) or None


def auth_headers(api_key: str | None) -> dict[str, str]:
    """`Authorization: Bearer KEY` when a key is set."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def raise_for_error(response: httpx.Response) -> None:
    """Raise the typed FramecastError for a non-2xx response (no-op for success)."""
    if response.is_success:
        return
    try:
        body = response.json()
    except ValueError:
        body = response.text
    raise error_from_http(response.status_code, body)


def json_body(response: httpx.Response) -> dict:
    """The JSON object of a successful response (ProtocolError if it is not a JSON object)."""
    raise_for_error(response)
    try:
        body = response.json()
    except ValueError as exc:
        raise ProtocolError(f"{response.request.url} answered non-JSON: {response.text[:200]!r}") from exc
    if not isinstance(body, dict):
        raise ProtocolError(f"{response.request.url} answered {type(body).__name__}, expected an object")
    return body


def token_from_session_response(body: dict) -> str:
    """The client token in a `POST /v1/realtime/sessions` answer.

    Accepts `{"token": ...}`, `{"client_secret": {"value": ...}}` (OpenAI's shape) and
    `{"client_secret": "..."}`.
    """
    token = body.get("token")
    secret = body.get("client_secret")
    if token is None and isinstance(secret, dict):
        token = secret.get("value")
    elif token is None:
        token = secret
    if not isinstance(token, str) or not token:
        raise ProtocolError(f"/v1/realtime/sessions answered without a token: {sorted(body)}")
    return token
