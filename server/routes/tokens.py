"""`POST /v1/realtime/sessions`: mint a short-lived client token for the WebSocket (`?token=`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from server.routes.deps import get_state, require_api_key
from server.state import ServerState

router = APIRouter()


@router.post("/v1/realtime/sessions", dependencies=[Depends(require_api_key)])
def create_client_token(state: ServerState = Depends(get_state)) -> dict:
    token, expires_at = state.auth.mint_token()
    return {
        "object": "realtime.client_token",
        "token": token,
        "expires_at": expires_at,
        "url": "/v1/realtime?token=" + token,
    }
