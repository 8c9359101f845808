"""`framecast videos create|get|list|download|delete|remix|extend`: the REST job API from the command line.

    framecast videos create "a red ball" --seconds 2 --wait -o clip.mp4
    framecast videos list --limit 10
    framecast videos download VIDEO_ID -o clip.mp4 [--variant thumbnail|spritesheet]
    framecast videos remix VIDEO_ID "a blue square" --wait -o remix.mp4
    framecast videos extend VIDEO_ID "now it turns green" --seconds 2 --wait -o longer.mp4
    framecast videos extend clip.mp4 "go on" --seconds 2          # any video file
    framecast videos extend VIDEO_ID "it goes on" --audio more.wav  # an avatar's next words (its length)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from client.errors import UsageError
from client.http_common import API_KEY_ENV, DEFAULT_URL, URL_ENV
from client.jobs import JobsClient, Video

VARIANT_SUFFIX = {"video": ".mp4", "thumbnail": ".webp", "spritesheet": ".jpg"}  # download file names


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("videos", help="create, inspect and download video jobs (REST API)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=None, help=f"server URL (default ${URL_ENV} or {DEFAULT_URL})")
    common.add_argument("--api-key", default=None, help=f"API key (default ${API_KEY_ENV})")
    common.add_argument("--json", action="store_true", help="print the server's JSON instead of a summary")
    actions = parser.add_subparsers(dest="videos_action", metavar="ACTION", required=True)

    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--wait", action="store_true", help="wait for the job with a progress bar")
    waiting.add_argument("-o", "--output", type=Path, default=None, help="with --wait: download the MP4 here")

    create = actions.add_parser("create", parents=[common, waiting], help="queue a clip")
    create.add_argument("prompt")
    create.add_argument("--seconds", type=float, default=None, help="clip length (server default if omitted)")
    create.add_argument("--seed", type=int, default=None)
    create.add_argument("--model", default=None)
    create.add_argument("--image", type=Path, default=None, help="start the clip from this picture")
    create.set_defaults(func=run_create)

    get = actions.add_parser("get", parents=[common], help="show one job")
    get.add_argument("video_id")
    get.set_defaults(func=run_get)

    listing = actions.add_parser("list", parents=[common], help="list jobs (newest first)")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--after", default=None, help="id of the last job of the previous page")
    listing.set_defaults(func=run_list)

    download = actions.add_parser("download", parents=[common], help="download a finished job's MP4")
    download.add_argument("video_id")
    download.add_argument("-o", "--output", type=Path, default=None, help="default VIDEO_ID.mp4 (or .webp / .jpg)")
    download.add_argument("--variant", choices=VARIANT_SUFFIX, default="video",
                          help="video (MP4), thumbnail (WebP) or spritesheet (JPEG grid)")
    download.set_defaults(func=run_download)

    remix = actions.add_parser("remix", parents=[common, waiting], help="same seed, length and image, new prompt")
    remix.add_argument("video_id")
    remix.add_argument("prompt")
    remix.add_argument("--audio", type=Path, default=None, help="avatar models: new audio (and length) for the remix")
    remix.set_defaults(func=run_remix)

    extend = actions.add_parser("extend", parents=[common, waiting],
                                help="continue a finished job (VIDEO_ID) or a video file for more seconds")
    extend.add_argument("video", help="a finished job's id, or a video file to continue")
    extend.add_argument("prompt")
    extend.add_argument("--seconds", type=float, default=None, help="length of the new part (with --audio: its length)")
    extend.add_argument("--audio", type=Path, default=None, help="avatar models: the audio of the new part")
    extend.set_defaults(func=run_extend)

    delete = actions.add_parser("delete", parents=[common], help="cancel and delete a job")
    delete.add_argument("video_id")
    delete.set_defaults(func=run_delete)


def _client(args: argparse.Namespace) -> JobsClient:
    try:
        return JobsClient(args.url, args.api_key)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _guarded(action):
    """Run an action; a wait that times out is a one-line error (server errors already are)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return action(args)
        except TimeoutError as exc:
            raise UsageError(str(exc)) from exc

    return run


def summary(video: Video) -> str:
    """One line: id, status, progress, prompt (and the error of a failed job)."""
    line = f"{video.id}  {video.status:<11} {video.progress:5.1f}%  {video.prompt}"
    return f"{line}  [{video.error_message}]" if video.error_message else line


def _show(video: Video, args: argparse.Namespace) -> None:
    print(json.dumps(video.raw, indent=2) if args.json else summary(video))


@_guarded
def run_create(args: argparse.Namespace) -> int:
    if args.image is not None and not args.image.is_file():
        raise UsageError(f"image not found: {args.image}")
    with _client(args) as jobs:
        _finish(jobs, lambda: jobs.create(args.prompt, seconds=args.seconds, seed=args.seed, model=args.model,
                                          image=args.image), args)
    return 0


def _finish(jobs: JobsClient, make, args: argparse.Namespace) -> None:
    """Queue a job with `make()`; with --wait follow it with a progress bar (and download it with -o);
    then show it."""
    if args.output is not None and not args.wait:
        raise UsageError("-o/--output needs --wait (or use `framecast videos download` later)")
    video = make()
    if args.wait:
        video = _wait_with_bar(jobs, video)
        if args.output is not None:
            jobs.download(video.id, args.output)
    _show(video, args)
    if args.wait and args.output is not None and not args.json:
        print(f"saved {args.output}")


@_guarded
def run_remix(args: argparse.Namespace) -> int:
    with _client(args) as jobs:
        _finish(jobs, lambda: jobs.remix(args.video_id, args.prompt, audio=args.audio), args)
    return 0


@_guarded
def run_extend(args: argparse.Namespace) -> int:
    clip = Path(args.video)
    if not clip.is_file() and not args.video.startswith("video_"):
        raise UsageError(f"{args.video} is neither a video file nor a video id")
    if args.seconds is None and args.audio is None:
        raise UsageError("--seconds is needed (or --audio, whose length it then is)")
    source = {"clip": clip} if clip.is_file() else {"video_id": args.video}
    with _client(args) as jobs:
        _finish(jobs, lambda: jobs.extend(args.prompt, args.seconds, audio=args.audio, **source), args)
    return 0


def _wait_with_bar(jobs: JobsClient, video: Video) -> Video:
    """Wait for the job with a rich progress bar on stderr."""
    progress = Progress(TextColumn("[bold]{task.fields[status]}"), BarColumn(), TaskProgressColumn(),
                        TimeElapsedColumn(), console=Console(stderr=True))
    with progress:
        task = progress.add_task(video.id, total=100, status=video.status)
        return jobs.wait(video.id, on_progress=lambda v: progress.update(task, completed=v.progress, status=v.status))


@_guarded
def run_get(args: argparse.Namespace) -> int:
    with _client(args) as jobs:
        _show(jobs.get(args.video_id), args)
    return 0


@_guarded
def run_list(args: argparse.Namespace) -> int:
    with _client(args) as jobs:
        page = jobs.list(limit=args.limit, after=args.after)
    if args.json:
        print(json.dumps([v.raw for v in page.data], indent=2))
        return 0
    table = Table("id", "status", "progress", "seconds", "prompt")
    for video in page.data:
        table.add_row(video.id, video.status, f"{video.progress:.0f}%",
                      "" if video.seconds is None else f"{video.seconds:g}", video.prompt)
    Console(width=200).print(table)
    if page.has_more:
        print(f"more: framecast videos list --after {page.last_id}")
    return 0


@_guarded
def run_download(args: argparse.Namespace) -> int:
    output = args.output or Path(f"{args.video_id}{VARIANT_SUFFIX[args.variant]}")
    with _client(args) as jobs:
        jobs.download(args.video_id, output, variant=args.variant)
    print(f"saved {output}")
    return 0


@_guarded
def run_delete(args: argparse.Namespace) -> int:
    with _client(args) as jobs:
        video = jobs.delete(args.video_id)
    if video is not None:
        _show(video, args)
    else:
        print(f"deleted {args.video_id}")
    return 0
