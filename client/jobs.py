"""Clients for the REST video job API (`/v1/videos`, shaped like OpenAI's video API).

    jobs = JobsClient("http://127.0.0.1:8000")
    video = jobs.create("a red ball bouncing", seconds=2, seed=1)
    video = jobs.wait(video.id, on_progress=lambda v: print(v.status, v.progress))
    jobs.download(video.id, "clip.mp4")
    longer = jobs.wait(jobs.extend("now it turns green", 2, video_id=video.id).id)  # 4 s in all
    other = jobs.remix(video.id, "a blue square bouncing")                        # same seed and length
    talk = jobs.create("a face speaking", image="face.png", audio="speech.wav", model="shapes-avatar")
    more = jobs.extend("it goes on", None, video_id=talk.id, audio="more.wav")   # its next words

`AsyncJobsClient` has the same methods as coroutines. Errors raise the typed FramecastError
subclasses (NotFoundError, UnauthorizedError, ...); `wait` raises JobFailedError for a job that
ended `failed` or `cancelled`.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from client.data_url import image_data_url
from client.errors import ConnectionLostError, JobFailedError, ProtocolError
from client.http_common import auth_headers, json_body, raise_for_error, resolve_api_key, resolve_base_url

VIDEOS_PATH = "/v1/videos"
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True)
class Video:
    """A video job as the server reports it."""

    id: str
    status: str  # queued | in_progress | completed | failed | cancelled
    progress: float  # 0..100
    prompt: str
    seconds: float | None
    created_at: int | None  # unix seconds
    completed_at: int | None  # unix seconds, once finished
    error: Any  # the server's error (object or string) for a failed job, else None
    raw: dict = field(repr=False, default_factory=dict)  # the whole object, extra fields included

    @classmethod
    def from_dict(cls, data: dict) -> "Video":
        if "id" not in data or "status" not in data:
            raise ProtocolError(f"not a video object: {sorted(data)}")
        seconds = data.get("seconds")
        return cls(
            id=str(data["id"]),
            status=str(data["status"]),
            progress=float(data.get("progress") or 0),
            prompt=str(data.get("prompt", "")),
            seconds=float(seconds) if seconds is not None else None,
            created_at=data.get("created_at"),
            completed_at=data.get("completed_at"),
            error=data.get("error"),
            raw=data,
        )

    @property
    def done(self) -> bool:
        """True once the job can no longer change (completed, failed or cancelled)."""
        return self.status in TERMINAL_STATUSES

    @property
    def error_message(self) -> str:
        """The failure reason as one line ('' when there is none)."""
        if isinstance(self.error, dict):
            return str(self.error.get("message") or self.error.get("code") or self.error)
        return str(self.error or "")


@dataclass(frozen=True)
class VideoPage:
    """One page of `GET /v1/videos`."""

    data: list[Video]
    has_more: bool
    last_id: str | None  # pass as `after` to get the next page


def create_request(prompt: str, seconds: float | None, seed: int | None, model: str | None,
                   image: str | Path | bytes | None, audio: str | Path | bytes | None = None) -> dict:
    """httpx keyword arguments of `POST /v1/videos`: a JSON body (image as a data URL), or with
    `audio` (a path or the file's bytes: WAV, MP3, OGG, ...) multipart, as the OpenAI SDK sends
    files: `audio` and `input_reference` file parts."""
    body: dict[str, Any] = {"prompt": prompt}
    if seconds is not None:
        body["seconds"] = seconds
    if seed is not None:
        body["seed"] = int(seed)
    if model is not None:
        body["model"] = model
    if audio is None:
        if image is not None:
            body["image"] = image_data_url(image)
        return {"json": body}
    files = {"audio": audio_part(audio)}
    if image is not None:  # the content type the server checks comes from the decoded image
        mime, data = image_data_url(image)[len("data:"):].split(";base64,", 1)
        files["input_reference"] = ("face." + mime.split("/")[-1], base64.b64decode(data), mime)
    return {"data": {k: str(v) for k, v in body.items()}, "files": files}


def audio_part(audio: str | Path | bytes) -> tuple[str, bytes, str]:
    """The multipart `audio` file part of an audio file (a path or its bytes)."""
    if isinstance(audio, bytes):
        return "audio.wav", audio, "application/octet-stream"
    return Path(audio).name, Path(audio).read_bytes(), "application/octet-stream"


def extend_request(prompt: str, seconds: float | None, video_id: str | None, clip: str | Path | bytes | None,
                   audio: str | Path | bytes | None = None) -> dict:
    """httpx keyword arguments of `POST /v1/videos/extensions`: a finished job's id as JSON, or a clip
    (a path or the file's bytes) as a multipart file, as the OpenAI SDK sends it; with `audio` (avatar
    models: the new part's audio, a path or the file's bytes) multipart, `video[id]` a form field.
    `seconds` may be None with `audio` (the server takes the audio's length)."""
    if (video_id is None) == (clip is None):
        raise ValueError("give exactly one of video_id and clip")
    if seconds is None and audio is None:
        raise ValueError("seconds is needed without audio")
    fields = {"prompt": prompt} if seconds is None else {"prompt": prompt, "seconds": f"{seconds:g}"}
    if video_id is not None and audio is None:
        return {"json": {**fields, "video": {"id": video_id}}}
    files = {}
    if clip is not None:
        data = clip if isinstance(clip, bytes) else Path(clip).read_bytes()
        files["video"] = ("clip.mp4" if isinstance(clip, bytes) else Path(clip).name, data, "video/mp4")
    else:
        fields["video[id]"] = video_id
    if audio is not None:
        files["audio"] = audio_part(audio)
    return {"data": fields, "files": files}


def remix_request(prompt: str, audio: str | Path | bytes | None = None) -> dict:
    """httpx keyword arguments of `POST /v1/videos/{id}/remix`: JSON, or multipart with a new `audio`."""
    if audio is None:
        return {"json": {"prompt": prompt}}
    return {"data": {"prompt": prompt}, "files": {"audio": audio_part(audio)}}


def list_params(limit: int | None, after: str | None, order: str | None) -> dict:
    """Query parameters of `GET /v1/videos`."""
    params: dict[str, Any] = {}
    if limit is not None:
        params["limit"] = limit
    if after is not None:
        params["after"] = after
    if order is not None:
        params["order"] = order
    return params


def parse_page(body: dict) -> VideoPage:
    """A VideoPage from the `{"data": [...], "has_more": ..., "last_id": ...}` list object."""
    items = body.get("data")
    if not isinstance(items, list):
        raise ProtocolError("video list answer has no data array")
    videos = [Video.from_dict(item) for item in items]
    last_id = body.get("last_id") or (videos[-1].id if videos else None)
    return VideoPage(data=videos, has_more=bool(body.get("has_more", False)), last_id=last_id)


def unreachable(base_url: str, exc: Exception) -> ConnectionLostError:
    """The error for a server that cannot be reached."""
    return ConnectionLostError(f"cannot reach {base_url}: {exc}")


def check_finished(video: Video) -> Video:
    """Return a completed job, raise JobFailedError for a failed or cancelled one."""
    if video.status != "completed":
        reason = video.error_message or video.status
        raise JobFailedError(f"video {video.id} {video.status}: {reason}")
    return video


class JobsClient:
    """Blocking client for the video job API.

    url:     server base URL (default $FRAMECAST_URL or http://127.0.0.1:8000)
    api_key: sent as `Authorization: Bearer` (default $FRAMECAST_API_KEY)
    timeout: seconds per HTTP request
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 60.0):
        self.base_url = resolve_base_url(url)
        self.api_key = resolve_api_key(api_key)
        self._http = httpx.Client(base_url=self.base_url, headers=auth_headers(self.api_key), timeout=timeout)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from exc

    def create(self, prompt: str, seconds: float | None = None, seed: int | None = None,
               model: str | None = None, image: str | Path | bytes | None = None,
               audio: str | Path | bytes | None = None) -> Video:
        """Queue a clip; `image` (path, bytes or data URL) makes it start from that picture; `audio`
        (an audio file's path or bytes) drives an avatar model (`seconds` then defaults to its length)."""
        request = create_request(prompt, seconds, seed, model, image, audio)
        return Video.from_dict(json_body(self._request("POST", VIDEOS_PATH, **request)))

    def get(self, video_id: str) -> Video:
        """The job's current state."""
        return Video.from_dict(json_body(self._request("GET", f"{VIDEOS_PATH}/{video_id}")))

    def list(self, limit: int | None = None, after: str | None = None, order: str | None = None) -> VideoPage:
        """One page of jobs; pass `page.last_id` as `after` for the next one."""
        return parse_page(json_body(self._request("GET", VIDEOS_PATH, params=list_params(limit, after, order))))

    def iter_all(self, page_size: int = 50) -> Iterator[Video]:
        """Every job, following pagination."""
        after = None
        while True:
            page = self.list(limit=page_size, after=after)
            yield from page.data
            if not page.has_more or not page.last_id:
                return
            after = page.last_id

    def wait(self, video_id: str, poll_interval: float = 0.5, timeout: float | None = None,
             on_progress: Callable[[Video], None] | None = None) -> Video:
        """Poll until the job finishes; `on_progress(video)` is called after every poll.

        Returns the completed Video; raises JobFailedError (failed/cancelled) or TimeoutError.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            video = self.get(video_id)
            if on_progress:
                on_progress(video)
            if video.done:
                return check_finished(video)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"video {video_id} still {video.status} after {timeout} s")
            time.sleep(poll_interval)

    def remix(self, video_id: str, prompt: str, audio: str | Path | bytes | None = None) -> Video:
        """A new job with the same seed, length, start image and audio as `video_id`, under `prompt`;
        `audio` (an audio file's path or bytes) replaces the audio and the length."""
        return Video.from_dict(json_body(self._request("POST", f"{VIDEOS_PATH}/{video_id}/remix",
                                                       **remix_request(prompt, audio))))

    def extend(self, prompt: str, seconds: float | None, *, video_id: str | None = None,
               clip: str | Path | bytes | None = None, audio: str | Path | bytes | None = None) -> Video:
        """Continue a finished job (`video_id`) or a video file (`clip`: path or bytes) for `seconds`
        more under `prompt`; the new job's video is the stitched whole. `audio` (avatar models: an
        audio file's path or bytes) drives the new part; `seconds` None then means its length."""
        return Video.from_dict(json_body(self._request("POST", f"{VIDEOS_PATH}/extensions",
                                                       **extend_request(prompt, seconds, video_id, clip, audio))))

    def content(self, video_id: str, variant: str = "video") -> bytes:
        """The finished job's MP4 (or its `thumbnail` WebP / `spritesheet` JPEG) as bytes."""
        response = self._request("GET", f"{VIDEOS_PATH}/{video_id}/content", params={"variant": variant})
        raise_for_error(response)
        return response.content

    def download(self, video_id: str, path: str | Path, variant: str = "video") -> Path:
        """Stream the finished MP4 (or a still `variant`) to `path` (parents created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._http.stream("GET", f"{VIDEOS_PATH}/{video_id}/content", params={"variant": variant}) as response:
                if not response.is_success:
                    response.read()
                    raise_for_error(response)
                with path.open("wb") as out:
                    for block in response.iter_bytes():
                        out.write(block)
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from exc
        return path

    def delete(self, video_id: str) -> Video | None:
        """Delete the job and its files (a running one is cancelled); returns the server's answer as a
        Video when it sends one (framecast answers with OpenAI's delete object: None)."""
        body = json_body(self._request("DELETE", f"{VIDEOS_PATH}/{video_id}"))
        return Video.from_dict(body) if "status" in body else None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "JobsClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class AsyncJobsClient:
    """Async client for the video job API; same arguments and methods as JobsClient."""

    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 60.0):
        self.base_url = resolve_base_url(url)
        self.api_key = resolve_api_key(api_key)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=auth_headers(self.api_key), timeout=timeout)

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from exc

    async def create(self, prompt: str, seconds: float | None = None, seed: int | None = None,
                     model: str | None = None, image: str | Path | bytes | None = None,
                     audio: str | Path | bytes | None = None) -> Video:
        request = create_request(prompt, seconds, seed, model, image, audio)
        return Video.from_dict(json_body(await self._request("POST", VIDEOS_PATH, **request)))

    async def get(self, video_id: str) -> Video:
        return Video.from_dict(json_body(await self._request("GET", f"{VIDEOS_PATH}/{video_id}")))

    async def list(self, limit: int | None = None, after: str | None = None, order: str | None = None) -> VideoPage:
        return parse_page(json_body(await self._request("GET", VIDEOS_PATH, params=list_params(limit, after, order))))

    async def wait(self, video_id: str, poll_interval: float = 0.5, timeout: float | None = None,
                   on_progress: Callable[[Video], None] | None = None) -> Video:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            video = await self.get(video_id)
            if on_progress:
                on_progress(video)
            if video.done:
                return check_finished(video)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"video {video_id} still {video.status} after {timeout} s")
            await asyncio.sleep(poll_interval)

    async def remix(self, video_id: str, prompt: str, audio: str | Path | bytes | None = None) -> Video:
        return Video.from_dict(json_body(await self._request("POST", f"{VIDEOS_PATH}/{video_id}/remix",
                                                             **remix_request(prompt, audio))))

    async def extend(self, prompt: str, seconds: float | None, *, video_id: str | None = None,
                     clip: str | Path | bytes | None = None, audio: str | Path | bytes | None = None) -> Video:
        return Video.from_dict(json_body(await self._request("POST", f"{VIDEOS_PATH}/extensions",
                                                             **extend_request(prompt, seconds, video_id, clip, audio))))

    async def content(self, video_id: str, variant: str = "video") -> bytes:
        response = await self._request("GET", f"{VIDEOS_PATH}/{video_id}/content", params={"variant": variant})
        raise_for_error(response)
        return response.content

    async def download(self, video_id: str, path: str | Path, variant: str = "video") -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            async with self._http.stream("GET", f"{VIDEOS_PATH}/{video_id}/content",
                                         params={"variant": variant}) as response:
                if not response.is_success:
                    await response.aread()
                    raise_for_error(response)
                with path.open("wb") as out:
                    async for block in response.aiter_bytes():
                        out.write(block)
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from exc
        return path

    async def delete(self, video_id: str) -> Video | None:
        body = json_body(await self._request("DELETE", f"{VIDEOS_PATH}/{video_id}"))
        return Video.from_dict(body) if "status" in body else None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncJobsClient":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()
