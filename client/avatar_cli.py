"""`framecast avatar`: a face from a picture speaks an audio file, rendered by the server as a job.

    framecast avatar --image face.png --audio speech.wav -o talk.mp4
    framecast avatar --image face.png --audio speech.mp3 -o talk.mp4 --url http://gpu-box:8000
    framecast avatar --sample samples/           # writes samples/face.png and samples/speech.wav to try

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
    parser.add_argument("--image", type=Path, help="the face (PNG, JPEG or WebP)")
    parser.add_argument("--audio", type=Path, help="the speech (WAV, MP3, OGG, FLAC, ...)")
    parser.add_argument("-o", "--output", type=Path, help="the MP4 to write (video + audio)")
    parser.add_argument("--sample", type=Path, metavar="DIR",
                        help="only write DIR/face.png and DIR/speech.wav (a face and a voice like those "
                             "shapes-avatar was trained on, --seconds long, default 8) and exit")
    parser.add_argument("--sample-index", type=int, default=0, help="which sample face (default 0)")
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
    if args.sample is not None:
        return write_sample(args.sample, args.sample_index, args.seconds or 8.0)
    for what, path in (("image", args.image), ("audio", args.audio), ("output", args.output)):
        if path is None:
            raise UsageError(f"--{what} is required (or --sample DIR for a face and a voice to try)")
    for what, path in (("image", args.image), ("audio", args.audio)):
        if not path.is_file():
            raise UsageError(f"{what} not found: {path}")
    with _client(args) as jobs:
        _finish(jobs, lambda: jobs.create(args.prompt, seconds=args.seconds, seed=args.seed, model=args.model,
                                          image=args.image, audio=args.audio), args)
    return 0


def write_sample(out: Path, index: int, seconds: float) -> int:
    """DIR/face.png and DIR/speech.wav: a face and synthetic speech of shapes-avatar's world."""
    from distill.avatar_eval import sample_files

    if seconds <= 0:
        raise UsageError("--seconds must be positive")
    png, wav = sample_files(index, seconds)
    out.mkdir(parents=True, exist_ok=True)
    (out / "face.png").write_bytes(png)
    (out / "speech.wav").write_bytes(wav)
    print(f"wrote {out / 'face.png'} and {out / 'speech.wav'} ({seconds:g} s); try:\n"
          f"  framecast avatar --image {out / 'face.png'} --audio {out / 'speech.wav'} -o talk.mp4")
    return 0

