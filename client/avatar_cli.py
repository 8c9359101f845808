"""`framecast avatar`: a face from a picture speaks an audio file, rendered by the server as a job.

    framecast avatar --image face.png --audio speech.wav -o talk.mp4
    framecast avatar --image face.png --audio speech.mp3 -o talk.mp4 --url http://gpu-box:8000

A thin shell over the job API (`POST /v1/videos` with `input_reference` and `audio` files, then wait
and download): the video is as long as the audio and its MP4 carries the audio track. The server
must serve an avatar model (`framecast serve --model shapes-avatar`). For a live, streamed avatar
use the Python client (`connect(..., audio_rate=...)`, `stream_audio`) or the studio page's Avatar tab.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from client.errors import UsageError
from client.http_common import API_KEY_ENV, DEFAULT_URL, URL_ENV
from client.videos_cli import _client, _finish, _guarded

DEFAULT_PROMPT = "a face speaking"  # avatar models take their look from the image; the prompt is a hint


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("avatar", help="make a face from a picture speak an audio file (job API)")
    parser.add_argument("--image", type=Path, required=True, help="the face (PNG, JPEG or WebP)")
    parser.add_argument("--audio", type=Path, required=True, help="the speech (WAV, MP3, OGG, FLAC, ...)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the MP4 to write (video + audio)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--seconds", type=float, default=None, help="video length (default: the audio's)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--model", default=None, help="must name the served model when given")
    parser.add_argument("--url", default=None, help=f"server URL (default ${URL_ENV} or {DEFAULT_URL})")
    parser.add_argument("--api-key", default=None, help=f"API key (default ${API_KEY_ENV})")
    parser.add_argument("--json", action="store_true", help="print the server's JSON instead of a summary")
    parser.set_defaults(func=run_avatar, wait=True)


@_guarded
def run_avatar(args: argparse.Namespace) -> int:
    for what, path in (("image", args.image), ("audio", args.audio)):
        if not path.is_file():
            raise UsageError(f"{what} not found: {path}")
    with _client(args) as jobs:
        _finish(jobs, lambda: jobs.create(args.prompt, seconds=args.seconds, seed=args.seed, model=args.model,
                                          image=args.image, audio=args.audio), args)
    return 0
