"""What a job's stream is conditioned on, as its record stores it: one JSON string.

`JobConditioning` is `models.stream_api.Conditioning` with its media kept as the encoded bytes the
client sent: small ones inline (a PNG start image), large ones by reference to a file under the
data dir's uploads/ (an audio track). A job record stores it whole, so a store never needs to know
which inputs exist. Adding a job input is: put its bytes in `media` (or its saved upload's name in
`files`) where the job is created, and name its decoder in `JobRunner` (server/jobs/runner.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from models.stream_api import Conditioning


@dataclass(frozen=True)
class JobConditioning:
    """Conditioning with encoded media; `to_json` / `from_json` are its stored form."""

    prompt: str
    seed: int | None = None  # fixed when the job is created, so a re-run renders the same video
    media: Mapping[str, bytes] = field(default_factory=dict)  # name -> encoded bytes ("image": PNG/JPEG/WebP)
    files: Mapping[str, str] = field(default_factory=dict)  # name -> upload file name (JobFiles.upload), by reference
    inputs: tuple[str, ...] = ()  # per-chunk input kinds (Conditioning.inputs)

    def to_json(self) -> str:
        """{"prompt", "seed", "media": {name: base64}, "files", "inputs"}: JSON, so any store keeps it as text."""
        media = {name: base64.b64encode(raw).decode("ascii") for name, raw in self.media.items()}
        return json.dumps({"prompt": self.prompt, "seed": self.seed, "media": media, "files": dict(self.files),
                           "inputs": list(self.inputs)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> JobConditioning:
        data = json.loads(text)
        media = {name: base64.b64decode(raw) for name, raw in data.get("media", {}).items()}
        return cls(data["prompt"], seed=data.get("seed"), media=media, files=data.get("files", {}),
                   inputs=tuple(data.get("inputs", ())))

    @classmethod
    def from_legacy(cls, prompt: str, seed: int | None, image: bytes | None) -> JobConditioning:
        """A record written before conditioning was one field (separate prompt, seed, image)."""
        return cls(prompt, seed=seed, media={"image": image} if image else {})

    def decode(self, decoders: Mapping[str, Callable[[bytes], Any]], read_file: Callable[[str], bytes]) -> Conditioning:
        """The model's Conditioning, each medium (inline, or `read_file(files[name])`) decoded by
        `decoders[name]` into the Conditioning field of that name. ValueError for a medium no decoder knows."""
        unknown = sorted((set(self.media) | set(self.files)) - set(decoders))
        if unknown:
            raise ValueError(f"this server cannot decode the job's {', '.join(unknown)}")
        raw = {**self.media, **{name: read_file(file) for name, file in self.files.items()}}
        decoded = {name: decoders[name](data) for name, data in raw.items()}
        return Conditioning(self.prompt, seed=self.seed, inputs=self.inputs, **decoded)
