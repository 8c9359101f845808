"""Shared router dependencies: the app's ServerState and the API-key check."""

from __future__ import annotations

from fastapi import Request

from client.protocol.errors import UnauthorizedError

from server.state import ServerState


def get_state(request: Request) -> ServerState:
    return request.app.state.framecast


def require_api_key(request: Request) -> None:
    """REST auth: `Authorization: Bearer KEY` when API keys are configured."""
    state: ServerState = request.app.state.framecast
    if not state.auth.check_bearer(request.headers.get("authorization")):
        raise UnauthorizedError("missing or invalid API key")
