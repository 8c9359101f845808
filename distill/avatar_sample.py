"""A face and a voice to try an avatar model with: `python -m distill.avatar_sample DIR [--seconds 8] [--index 0]`.

Writes DIR/face.png (an evaluation face of the shapes-avatar world, 64x64) and DIR/speech.wav (its
synthetic speech, 16 kHz mono), which `framecast avatar --image DIR/face.png --audio DIR/speech.wav`
and the studio's Avatar tab take.
"""

from __future__ import annotations

import argparse
import io
import wave
from pathlib import Path
from types import SimpleNamespace

from distill.avatar_eval import eval_face


def sample_files(index: int, seconds: float, width: int = 64, height: int = 64, fps: int = 16,
                 sample_rate: int = 16000) -> tuple[bytes, bytes]:
    """(PNG, WAV) of evaluation face `index` and `seconds` of its synthetic speech."""
    from PIL import Image

    from models.audio import float_to_pcm_s16le

    canvas = SimpleNamespace(width=width, height=height, fps=fps, audio_sample_rate=sample_rate)
    image, _, audio = eval_face(index, seconds, canvas)
    png = io.BytesIO()
    Image.fromarray(image).save(png, format="PNG")
    wav = io.BytesIO()
    with wave.open(wav, "wb") as w:  # PCM s16le mono
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(float_to_pcm_s16le(audio[:round(seconds * sample_rate)]))
    return png.getvalue(), wav.getvalue()


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
