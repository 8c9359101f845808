"""Video jobs in the shape of OpenAI's video API: create, get, list, cancel, download."""

from __future__ import annotations

import asyncio
import secrets

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from client.protocol.errors import CapacityError, ConflictError, FramecastError, NotFoundError, TooLargeError
from client.protocol.events import MAX_SEED
from server.images import data_url_bytes, decode_image_bytes
from server.jobs.store import TERMINAL, Job
from server.protocol import check_model_request
from server.rest_errors import VALIDATION_STATUS, invalid
from server.routes.deps import get_state, require_api_key
from server.state import ServerState

router = APIRouter(prefix="/v1/videos", dependencies=[Depends(require_api_key)], tags=["videos"])


class VideoCreate(BaseModel):
    """POST /v1/videos body."""

    prompt: str = Field(min_length=1)
    seconds: float | None = Field(default=None, gt=0)  # default: FRAMECAST_DEFAULT_JOB_SECONDS
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    model: str | None = None  # must name the loaded model when given
    image: str | None = None  # data URL of the first frame (models with image conditioning)


def video_object(job: Job) -> dict:
    error = None if job.error is None else {"code": job.status, "message": job.error}
    return {
        "id": job.id, "object": "video", "status": job.status, "progress": job.progress,
        "created_at": job.created_at, "completed_at": job.completed_at, "seconds": job.seconds,
        "prompt": job.prompt, "model": job.model, "seed": job.seed, "size": job.size, "error": error,
    }


def _get_job(state: ServerState, video_id: str) -> Job:
    job = state.store.get(video_id)
    if job is None:
        raise NotFoundError(f"no video {video_id!r}")
    return job


@router.post("")
async def create_video(body: VideoCreate, state: ServerState = Depends(get_state)) -> dict:
    settings, info = state.settings, state.info
    if len(body.prompt) > state.max_prompt_chars:
        raise TooLargeError(f"field 'prompt': over the {state.max_prompt_chars}-character limit", param="prompt",
                            status=VALIDATION_STATUS)
    seconds = body.seconds if body.seconds is not None else settings.default_job_seconds
    if seconds > settings.max_job_seconds:
        raise invalid("seconds", f"over the {settings.max_job_seconds:g}-second limit")
    image_bytes = None
    try:  # a field the realtime socket would refuse: the same code, answered as a 422 naming the field
        check_model_request(info, body.model)
        if body.image is not None:
            image_bytes = data_url_bytes(body.image, max_bytes=settings.max_image_bytes)
            await asyncio.to_thread(decode_image_bytes, image_bytes, max_bytes=settings.max_image_bytes,  # off the loop
                                    max_pixels=settings.max_image_pixels, max_aspect=settings.max_image_aspect)
    except FramecastError as exc:
        exc.status = VALIDATION_STATUS
        raise
    if not state.admitting:
        raise CapacityError("the server is shutting down")
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31)  # fixed now: a re-run matches
    job = Job(id=Job.new_id(), prompt=body.prompt, seconds=seconds, model=info.name, seed=seed,
              image=image_bytes, size=f"{info.width}x{info.height}")
    state.store.create(job)
    state.runner.wake()
    return video_object(job)


@router.get("")
def list_videos(after: str | None = None, limit: int = Query(default=20, ge=1, le=100),
                state: ServerState = Depends(get_state)) -> dict:
    jobs, has_more = state.store.list(after=after, limit=limit)
    data = [video_object(j) for j in jobs]
    return {"object": "list", "data": data, "has_more": has_more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


@router.get("/{video_id}")
def get_video(video_id: str, state: ServerState = Depends(get_state)) -> dict:
    return video_object(_get_job(state, video_id))


@router.delete("/{video_id}")
def cancel_video(video_id: str, state: ServerState = Depends(get_state)) -> dict:
    """Cancel a queued or running job; a finished job is returned unchanged."""
    job = _get_job(state, video_id)
    if job.status not in TERMINAL:
        job = state.store.update(video_id, only_if=("queued", "in_progress"), status="cancelled",
                                 error="cancelled by the client") or _get_job(state, video_id)
    return video_object(job)


@router.get("/{video_id}/content")
def video_content(video_id: str, state: ServerState = Depends(get_state)) -> FileResponse:
    job = _get_job(state, video_id)
    if job.status != "completed":
        raise ConflictError(f"video {video_id!r} is {job.status}, not completed")
    path = state.runner.video_path(video_id)
    if not path.is_file():
        raise NotFoundError(f"video {video_id!r} file is gone", status=410)
    return FileResponse(path, media_type="video/mp4", filename=f"{video_id}.mp4")
