"""Video jobs in the shape of OpenAI's video API: create, get, list, delete, content variants,
remix and extensions (autoregressive continuation). Bodies: server/routes/video_forms.py; errors:
server/rest_errors.py."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse

from client.protocol.errors import FramecastError
from client.protocol.events import MAX_SEED
from client.audio_file import decode_audio
from server.audio_track import JOB_AUDIO_RATE
from server.images import data_url_bytes, decode_image_bytes
from server.jobs.conditioning import JobConditioning
from server.jobs.files import VARIANTS
from server.jobs.store import TERMINAL, Job
from server.media import decode_clip
from server.protocol import check_model_request
from server.rest_errors import api_error, invalid
from server.routes.deps import get_state, require_api_key
from server.routes.video_forms import CreateRequest, ExtendRequest, RemixRequest, Upload, parse, read_body
from server.state import ServerState

router = APIRouter(prefix="/v1/videos", dependencies=[Depends(require_api_key)], tags=["videos"])
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")  # input_reference uploads
_STATUS_OF_CODE = {"too_large": 413, "bad_request": 400, "unsupported": 400}  # errors of media decoders


def _seconds(value: float) -> str:
    """OpenAI sends and returns `seconds` as a string ("4"); fractional lengths keep their digits."""
    return f"{value:g}"


def video_object(job: Job) -> dict:
    """The OpenAI video object, plus framecast's extras (seed, seconds as a number, extends_video_id)."""
    error = None if job.error is None else {"code": "cancelled" if job.status == "cancelled" else "generation_failed",
                                            "message": job.error}
    return {
        "id": job.id, "object": "video", "status": job.status, "progress": job.progress,
        "created_at": job.created_at, "completed_at": job.completed_at, "expires_at": None,
        "model": job.model, "prompt": job.conditioning.prompt, "seconds": _seconds(job.seconds), "size": job.size,
        "error": error, "remixed_from_video_id": job.remixed_from_video_id,
        # framecast extras
        "seed": job.conditioning.seed, "duration_s": job.seconds, "extends_video_id": job.extends_video_id,
    }


def _get_job(state: ServerState, video_id: str) -> Job:
    job = state.store.get(video_id)
    if job is None:
        raise api_error(404, f"no video {video_id!r}")
    return job


def _check_prompt_and_seconds(state: ServerState, prompt: str, seconds: float, total: float | None = None) -> None:
    if len(prompt) > state.max_prompt_chars:
        raise invalid("prompt", f"over the {state.max_prompt_chars}-character limit", code="too_large")
    limit = state.settings.max_job_seconds
    if seconds > limit or (total or 0) > limit:
        raise invalid("seconds", f"the video would be over the {limit:g}-second limit")


def _admit(state: ServerState) -> None:
    """503 while shutting down; 429 with Retry-After while the queue is full."""
    if not state.admitting:
        raise api_error(503, "the server is shutting down", code="capacity")
    settings = state.settings
    if state.store.count_by_status().get("queued", 0) >= settings.max_queued_jobs:
        raise api_error(429, f"the job queue is full ({settings.max_queued_jobs} queued); retry later",
                       code="capacity", headers={"Retry-After": str(settings.queue_retry_after_s)})


def _queue(state: ServerState, job: Job) -> dict:
    state.store.create(job)
    state.runner.wake()
    return video_object(job)


def _reference_image(state: ServerState, body: CreateRequest, files: dict) -> bytes | None:
    """The first frame's encoded bytes from `input_reference` (file or {"image_url"}) or `image`."""
    settings = state.settings
    upload = files.get("input_reference")
    if upload is not None:
        if upload.content_type not in IMAGE_TYPES:
            raise invalid("input_reference", f"{upload.content_type!r} is not one of {', '.join(IMAGE_TYPES)}",
                          status=400, code="unsupported")
        raw, field = upload.data, "input_reference"
    elif body.input_reference is not None or body.image is not None:
        url = body.image if body.image is not None else body.input_reference.get("image_url")
        field = "image" if body.image is not None else "input_reference"
        if not isinstance(url, str):
            raise invalid(field, "expected an image data URL")
        raw = _media(field, lambda: data_url_bytes(url, max_bytes=settings.max_image_bytes))
    else:
        return None
    _media(field, lambda: decode_image_bytes(raw, max_bytes=settings.max_image_bytes,
                                             max_pixels=settings.max_image_pixels, max_aspect=settings.max_image_aspect))
    return raw


def _media(field: str, decode):
    """Run a decoder; its error becomes 400 (undecodable) or 413 (too large) naming `field`."""
    try:
        return decode()
    except FramecastError as exc:
        message = exc.message.split(": ", 1)[-1] if exc.message.startswith("field ") else exc.message
        raise invalid(field, message, status=_STATUS_OF_CODE.get(exc.code, 400), code=exc.code) from None


def _check_inputs(state: ServerState, model: str | None, inputs: tuple[str, ...]) -> None:
    """A 422 naming the field when `model` is another model or the model takes no such input."""
    try:
        check_model_request(state.info, model, inputs)
    except FramecastError as exc:  # what the socket refuses the same way: a 422 naming the field
        exc.status = 422
        raise


async def _audio_seconds(state: ServerState, audio: Upload) -> float:
    """The length of an uploaded `audio` file part; decoded now (off the event loop), so an
    undecodable file is a 400 at once (the runner decodes it again from the saved upload)."""
    samples = await asyncio.to_thread(_media, "audio", lambda: decode_audio(
        audio.data, rate=JOB_AUDIO_RATE, max_seconds=state.settings.max_job_seconds))
    return len(samples) / JOB_AUDIO_RATE


def _tail_seconds(state: ServerState, video_id: str) -> float:
    """Seconds of frames a finished job's stream made past its video's end: its extension opens with
    them, and its own audio starts after them (server/jobs/runner.py)."""
    from models.resume import ResumeState

    return ResumeState.tail_frame_count(state.runner.files.state(video_id)) / state.info.fps


async def _save_audio(state: ServerState, job_id: str, raw: bytes) -> dict[str, str]:
    """JobConditioning.files for an audio file kept by reference as the job's own upload."""
    return {"audio": await asyncio.to_thread(state.runner.files.save_upload, job_id, raw, ".audio")}


@router.post("")
async def create_video(request: Request, state: ServerState = Depends(get_state)) -> dict:
    fields, files = await read_body(request)
    body = parse(CreateRequest, fields)
    settings, info = state.settings, state.info
    audio = files.get("audio")  # avatar models: the speech that drives the video (multipart file)
    size = f"{info.width}x{info.height}"
    if body.size is not None and body.size != size:
        raise invalid("size", f"model {info.name!r} renders {size}", code="unsupported")
    _check_inputs(state, body.model, ("audio",) if audio is not None else ())
    audio_s = await _audio_seconds(state, audio) if audio is not None else None
    seconds = next(s for s in (body.seconds, audio_s, settings.default_job_seconds) if s is not None)
    _check_prompt_and_seconds(state, body.prompt, seconds)
    image = await asyncio.to_thread(_reference_image, state, body, files)  # decoding: off the event loop
    _admit(state)
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31)  # fixed now: a re-run matches
    job_id = Job.new_id()
    # the audio is kept as sent, by reference (JobConditioning.files), decoded again by the runner
    kept = await _save_audio(state, job_id, audio.data) if audio is not None else {}
    conditioning = JobConditioning(body.prompt, seed=seed, media={"image": image} if image else {}, files=kept,
                                   inputs=("audio",) if audio is not None else ())
    return _queue(state, Job(id=job_id, conditioning=conditioning, seconds=seconds, model=info.name, size=size))


@router.get("")
def list_videos(after: str | None = None, limit: int = Query(default=20, ge=1, le=100),
                order: Literal["asc", "desc"] = "desc", state: ServerState = Depends(get_state)) -> dict:
    jobs, has_more = state.store.list(after=after, limit=limit, newest_first=order == "desc")
    data = [video_object(j) for j in jobs]
    return {"object": "list", "data": data, "has_more": has_more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


@router.post("/extensions")
async def extend_video(request: Request, state: ServerState = Depends(get_state)) -> dict:
    """Continue a finished job (`video: {"id"}`, JSON or the form field `video[id]`) or an uploaded
    clip (multipart file `video`) for `seconds` more under `prompt`; the result is the stitched video.
    Avatar models: an `audio` file part drives the new seconds (`seconds` then defaults to its
    length); an audio job's extension without one goes on in silence."""
    fields, files = await read_body(request)
    upload, audio = files.get("video"), files.get("audio")
    if upload is None and not isinstance(fields.get("video"), dict):
        raise invalid("video", "expected a video file (multipart) or {\"id\": VIDEO_ID}")
    body = parse(ExtendRequest, {k: v for k, v in fields.items() if k != "video" or upload is None})
    settings, info = state.settings, state.info
    _check_inputs(state, None, ("audio",) if audio is not None else ())
    audio_s = await _audio_seconds(state, audio) if audio is not None else None
    seconds = body.seconds if body.seconds is not None else audio_s
    if seconds is None:
        raise invalid("seconds", "Field required")
    job = Job(id=Job.new_id(), conditioning=JobConditioning(body.prompt, seed=secrets.randbelow(2**31)),
              seconds=0.0, model=info.name, size=f"{info.width}x{info.height}")
    inputs = ("audio",) if audio is not None else ()
    if upload is None:
        source = _get_job(state, str(body.video.get("id", "")))
        if source.status != "completed" or not state.runner.files.state(source.id).is_file():
            raise api_error(409, f"video {source.id!r} is {source.status}; only a completed video can be extended",
                           code="conflict", param="video")
        job.extends_video_id, job.source_seconds = source.id, source.seconds
        if audio is not None and body.seconds is None:  # the new audio starts after the source stream's tail
            seconds += await asyncio.to_thread(_tail_seconds, state, source.id)
        inputs = tuple(dict.fromkeys(source.conditioning.inputs + inputs))  # an audio job's extension hears audio
        job.conditioning = dataclasses.replace(job.conditioning, seed=source.conditioning.seed)  # its stream's seed
    else:
        clip = await asyncio.to_thread(_media, "video", lambda: decode_clip(
            upload.data, width=info.width, height=info.height, fps=info.fps,
            max_seconds=settings.max_job_seconds, max_pixels=settings.max_image_pixels))
        job.source_seconds = len(clip) / info.fps
    job.seconds = job.source_seconds + seconds
    _check_prompt_and_seconds(state, body.prompt, seconds, total=job.seconds)
    _admit(state)
    if upload is not None:
        job.upload = await asyncio.to_thread(state.runner.files.save_upload, job.id, upload.data)
    kept = await _save_audio(state, job.id, audio.data) if audio is not None else {}
    job.conditioning = dataclasses.replace(job.conditioning, files=kept, inputs=inputs)
    return _queue(state, job)


@router.get("/{video_id}")
def get_video(video_id: str, state: ServerState = Depends(get_state)) -> dict:
    return video_object(_get_job(state, video_id))


@router.delete("/{video_id}")
def delete_video(video_id: str, state: ServerState = Depends(get_state)) -> dict:
    """Delete a job and every file it has (a queued or running job is cancelled first)."""
    job = _get_job(state, video_id)
    if job.status not in TERMINAL:
        state.store.update(video_id, only_if=("queued", "in_progress"), status="cancelled",
                           error="deleted by the client")
    state.store.delete(video_id)
    state.runner.files.remove(video_id, *job.uploads())
    return {"id": video_id, "object": "video.deleted", "deleted": True}


@router.post("/{video_id}/remix")
async def remix_video(video_id: str, request: Request, state: ServerState = Depends(get_state)) -> dict:
    """A new job with the source's seed, length, start image and audio under a new prompt; a
    multipart `audio` file part replaces the audio (and the length becomes its length)."""
    fields, files = await read_body(request)
    body = parse(RemixRequest, fields)
    audio = files.get("audio")
    source = _get_job(state, video_id)
    if source.extends_video_id or source.upload:
        raise api_error(400, "an extension cannot be remixed; remix the video it extends", code="unsupported",
                       param="video_id")
    _check_inputs(state, None, ("audio",) if audio is not None else ())
    seconds = await _audio_seconds(state, audio) if audio is not None else source.seconds
    _check_prompt_and_seconds(state, body.prompt, seconds)
    _admit(state)
    job_id = Job.new_id()
    kept = {}  # the remix's own copy of its audio: either job may be deleted without the other losing it
    if audio is not None:
        kept = await _save_audio(state, job_id, audio.data)
    elif "audio" in source.conditioning.files:
        raw = await asyncio.to_thread(state.runner.files.upload(source.conditioning.files["audio"]).read_bytes)
        kept = await _save_audio(state, job_id, raw)
    inputs = tuple(dict.fromkeys(source.conditioning.inputs + (("audio",) if audio is not None else ())))
    conditioning = dataclasses.replace(source.conditioning, prompt=body.prompt, files=kept, inputs=inputs)
    return _queue(state, Job(id=job_id, conditioning=conditioning, seconds=seconds,
                             model=state.info.name, size=source.size, remixed_from_video_id=source.id))


@router.get("/{video_id}/content")
def video_content(video_id: str, variant: str = "video", state: ServerState = Depends(get_state)) -> FileResponse:
    if variant not in VARIANTS:
        raise api_error(404, f"no variant {variant!r}; one of {', '.join(VARIANTS)}", param="variant")
    job = _get_job(state, video_id)
    if job.status != "completed":
        raise api_error(409, f"video {video_id!r} is {job.status}, not completed", code="conflict")
    path = state.runner.files.variant(video_id, variant)
    if not path.is_file():
        raise api_error(404, f"the {variant} of video {video_id!r} is gone", param="variant")
    suffix, media_type = VARIANTS[variant]
    return FileResponse(path, media_type=media_type, filename=f"{video_id}{suffix}")
