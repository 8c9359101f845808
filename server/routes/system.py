"""Health, readiness, metrics, the model list, and the browser page."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse

from server.routes.deps import get_state, require_api_key
from server.state import ServerState

router = APIRouter()
WEB_DIR = Path(__file__).resolve().parents[2] / "client" / "web"  # the browser page (client/web/)


@router.get("/", include_in_schema=False)
def index() -> Response:
    page = WEB_DIR / "index.html"
    if page.is_file():
        return FileResponse(page)
    return JSONResponse({"name": "framecast", "docs": "/docs", "realtime": "/v1/realtime"})


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(state: ServerState = Depends(get_state)) -> Response:
    """200 when the model is loaded and a session slot is free, else 503."""
    if state.admitting and state.engine.has_room_for_live():
        return JSONResponse({"status": "ready"})
    reason = "shutting down" if not state.admitting else "no free session slot"
    return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)


def require_key_for_metrics(request: Request) -> None:
    """`/metrics` needs the API key when FRAMECAST_PROTECT_METRICS is set (and keys are)."""
    if request.app.state.framecast.settings.protect_metrics:
        require_api_key(request)


@router.get("/metrics", dependencies=[Depends(require_key_for_metrics)])
def metrics(state: ServerState = Depends(get_state)) -> Response:
    state.metrics.set_job_counts(state.store.count_by_status())
    sessions = state.sessions
    state.metrics.active_sessions.set(len(sessions))
    state.metrics.send_queue_depth.set(sum(s.queue_depth for s in sessions))
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/v1/models", dependencies=[Depends(require_api_key)])
def list_models(state: ServerState = Depends(get_state)) -> dict:
    info = state.info
    model = {
        "id": info.name, "object": "model", "family": info.family, "width": info.width, "height": info.height,
        "fps": info.fps, "chunk_frames": info.chunk_frames, "steps": info.steps,
        "max_sessions": state.settings.max_sessions, "supports_image": info.supports_image,
        "cuts": info.cuts,  # session.update may be a scene cut (`cut`)
        "inputs": list(info.inputs),  # per-chunk inputs a session may declare ("audio": avatar models)
    }
    if "audio" in info.inputs:  # what the model hears (any session rate is resampled to it) and how far ahead
        model["audio_sample_rate"], model["audio_lookahead_frames"] = info.audio_sample_rate, info.audio_lookahead_frames
    return {"object": "list", "data": [model]}


def add_protected_docs(app: FastAPI) -> None:
    """`/docs` and `/openapi.json` behind the API key (FRAMECAST_PROTECT_DOCS; the app is created
    with FastAPI's own docs routes off). The page's own fetch of the schema sends no key, so a
    browser sees the page without the schema: use `curl -H "Authorization: Bearer KEY"`."""

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_api_key)])
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(require_api_key)])
    def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")
