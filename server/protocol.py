"""Client -> server realtime messages: JSON text parsed into typed messages, or a ProtocolError.

Types are strict (a seed must be a JSON integer, not "5"); unknown fields are ignored so newer
clients keep working; every failure names the field in a one-line `bad_request` message.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from server.errors import ProtocolError

FORMATS = ("jpeg", "fmp4")  # chunk formats a session may ask for
MAX_SEED = 2**63 - 1
MAX_TRANSITION_CHUNKS = 64
MAX_SESSION_LEAD_S = 60.0  # the largest `max_lead_s` a session may ask for


class _Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class SessionStart(_Message):
    type: Literal["session.start"]
    prompt: str = Field(min_length=1)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    format: str = "jpeg"  # checked against FORMATS by the session (unknown -> `unsupported`)
    image: str | None = None  # data URL
    model: str | None = None  # must name the loaded model when given
    max_lead_s: float | None = Field(default=None, gt=0, le=MAX_SESSION_LEAD_S)  # None: the server's FRAMECAST_MAX_LEAD_S


class SessionUpdate(_Message):
    type: Literal["session.update"]
    prompt: str = Field(min_length=1)
    transition_chunks: int = Field(default=0, ge=0, le=MAX_TRANSITION_CHUNKS)
    event_id: str | int | None = None


class SessionPause(_Message):
    type: Literal["session.pause"]


class SessionResume(_Message):
    type: Literal["session.resume"]


class SessionStop(_Message):
    type: Literal["session.stop"]


class SessionPing(_Message):
    type: Literal["session.ping"]


ClientMessage = Annotated[
    Union[SessionStart, SessionUpdate, SessionPause, SessionResume, SessionStop, SessionPing],
    Field(discriminator="type"),
]
_ADAPTER = TypeAdapter(ClientMessage)
MESSAGE_TYPES = ("session.start", "session.update", "session.pause", "session.resume", "session.stop", "session.ping")


def parse_client_message(text: str, *, max_prompt_chars: int) -> BaseModel:
    """One of the Session* messages; raises ProtocolError(bad_request | unsupported | too_large)."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ProtocolError("bad_request", "message is not valid JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_request", "message must be a JSON object")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("bad_request", "field 'type': required string")
    if kind not in MESSAGE_TYPES:
        raise ProtocolError("unsupported", f"unknown message type {kind[:64]!r}")
    prompt = data.get("prompt")
    if isinstance(prompt, str) and len(prompt) > max_prompt_chars:
        raise ProtocolError("too_large", f"field 'prompt': over the {max_prompt_chars}-character limit")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"][1:]) or "type"  # loc[0] is the union tag
        raise ProtocolError("bad_request", f"field {field!r}: {err['msg']}") from None


def model_request_problem(info, model: str | None, wants_image: bool) -> tuple[str, str] | None:
    """(field, message) when a request names another model or asks for an image the model cannot
    take; None when it is fine. Shared by `session.start` and `POST /v1/videos`."""
    if model is not None and model != info.name:
        return "model", f"this server serves {info.name!r}"
    if wants_image and not info.supports_image:
        return "image", f"model {info.name!r} has no image conditioning"
    return None
