"""Server-side checks of a protocol request against the loaded model (the messages themselves
are defined once, in client/protocol/)."""

from __future__ import annotations

from client.protocol.errors import UnsupportedError
from models.generator import ModelInfo


def check_model_request(info: ModelInfo, model: str | None, inputs: tuple[str, ...] = ()) -> None:
    """UnsupportedError (naming the field) when a request names another model, or declares a
    streamed input (`inputs`: kinds such as "audio") the model cannot take. Shared by
    `session.start` and `POST /v1/videos`."""
    if model is not None and model != info.name:
        raise UnsupportedError(f"field 'model': this server serves {info.name!r}", param="model")
    for kind in inputs:
        if kind not in info.inputs:
            raise UnsupportedError(f"field {kind!r}: model {info.name!r} takes no {kind} input", param=kind)
