"""A face and a voice to try an avatar model with: `python -m distill.avatar_sample DIR [--seconds 8] [--index 0]`.

Writes DIR/face.png (an evaluation face of the shapes-avatar world, 64x64) and DIR/speech.wav (its
synthetic speech, 16 kHz mono), which `framecast avatar --image DIR/face.png --audio DIR/speech.wav`
and the studio's Avatar tab take.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distill.avatar_eval import sample_files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distill.avatar_sample", description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="directory to write face.png and speech.wav into")
    p.add_argument("--seconds", type=float, default=8.0, help="length of the speech (default: %(default)s)")
    p.add_argument("--index", type=int, default=0, help="which evaluation face (default: %(default)s)")
    args = p.parse_args(argv)
    if args.seconds <= 0:
        p.error("--seconds must be positive")
    png, wav = sample_files(args.index, args.seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "face.png").write_bytes(png)
    (args.out / "speech.wav").write_bytes(wav)
    print(f"wrote {args.out / 'face.png'} and {args.out / 'speech.wav'} ({args.seconds:g} s); try:\n"
          f"  framecast avatar --image {args.out / 'face.png'} --audio {args.out / 'speech.wav'} -o talk.mp4")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
