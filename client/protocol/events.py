"""Every JSON message of the realtime protocol, both directions, as pydantic models.

Client → server messages are parsed strictly (a seed must be a JSON integer, not "5"); unknown
fields are ignored so newer clients keep working; a failure raises the protocol's error class
(bad_request / unsupported / too_large) with a one-line message naming the field. Server → client
events are built from these models (`.dump()`), so the server cannot send a field the docs do not
name, and the client parses them with `parse_server_event`. docs/PROTOCOL.md is checked against
these definitions by tests/client/test_protocol_doc.py. Torch-free.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from client.protocol.chunks import FORMATS, INPUT_CODES
from client.protocol.errors import (
    BadRequestError, FramecastError, ProtocolError, TooLargeError, UnsupportedError,
)

MAX_SEED = 2**63 - 1
MAX_TRANSITION_CHUNKS = 64
MAX_SESSION_LEAD_S = 60.0  # the largest `max_lead_s` a session may ask for
AUDIO_FORMATS = ("pcm_s16le",)  # streamed audio input: PCM, 16-bit little-endian, channels interleaved


class _Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    def dump(self, *, exclude_none: bool = False) -> dict[str, Any]:
        """The JSON object sent on the wire (clients leave unset optional fields out)."""
        return self.model_dump(mode="json", exclude_none=exclude_none)

    @classmethod
    def unchecked(cls, **fields: Any) -> dict[str, Any]:
        """The wire object of a message built without validation: a client sends what it was given
        and the server, the one place messages are validated, answers with a typed error."""
        return cls.model_construct(**fields).dump(exclude_none=True)


# ---- client -> server -------------------------------------------------------------------------

class AudioInput(_Message):
    """`session.start.audio`: the session will stream audio input messages in this format."""

    format: str = "pcm_s16le"  # checked against AUDIO_FORMATS by the server (unknown -> `unsupported`)
    sample_rate: int = Field(default=16000, ge=8000, le=96000)
    channels: int = Field(default=1, ge=1, le=2)  # interleaved; the model hears their mean


class SessionStart(_Message):
    type: Literal["session.start"] = "session.start"
    prompt: str = Field(min_length=1)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    format: str = "jpeg"  # checked against FORMATS by the server (unknown -> `unsupported`)
    image: str | None = None  # data URL of the start image
    model: str | None = None  # must name the loaded model when given
    audio: AudioInput | None = None  # declares a streamed audio input (avatar models)
    max_lead_s: float | None = Field(default=None, gt=0, le=MAX_SESSION_LEAD_S)  # None: FRAMECAST_MAX_LEAD_S

    def declared_inputs(self) -> tuple[str, ...]:
        """The per-chunk input kinds this session declares (a field named after each kind)."""
        return tuple(kind for kind in INPUT_CODES if getattr(self, kind, None) is not None)


class SessionUpdate(_Message):
    type: Literal["session.update"] = "session.update"
    prompt: str = Field(min_length=1)
    transition_chunks: int = Field(default=0, ge=0, le=MAX_TRANSITION_CHUNKS)
    cut: bool = False  # a scene cut: the new prompt starts from an empty cache (transition_chunks must be 0)
    event_id: str | int | None = None


class SessionPause(_Message):
    type: Literal["session.pause"] = "session.pause"


class SessionResume(_Message):
    type: Literal["session.resume"] = "session.resume"


class SessionStop(_Message):
    type: Literal["session.stop"] = "session.stop"


class SessionPing(_Message):
    type: Literal["session.ping"] = "session.ping"


CLIENT_MESSAGES = (SessionStart, SessionUpdate, SessionPause, SessionResume, SessionStop, SessionPing)
ClientMessage = Annotated[Union[CLIENT_MESSAGES], Field(discriminator="type")]
_CLIENT_ADAPTER: TypeAdapter = TypeAdapter(ClientMessage)
MESSAGE_TYPES = tuple(m.model_fields["type"].default for m in CLIENT_MESSAGES)


def _typed_object(text: str, error: type[FramecastError], sender: str) -> dict[str, Any]:
    """The JSON object of a message, which must have a string `type`; else `error`."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise error(f"{sender} sent a message that is not valid JSON: {text[:100]!r}") from None
    if not isinstance(data, dict):
        raise error(f"{sender} sent a message that is not a JSON object: {text[:100]!r}")
    if not isinstance(data.get("type"), str):
        raise error(f"{sender} sent a message without a string field 'type': {text[:100]!r}", param="type")
    return data


def parse_client_message(text: str, *, max_prompt_chars: int) -> BaseModel:
    """One of the Session* messages; raises BadRequestError / UnsupportedError / TooLargeError."""
    data = _typed_object(text, BadRequestError, "the client")
    kind = data["type"]
    if kind not in MESSAGE_TYPES:
        raise UnsupportedError(f"unknown message type {kind[:64]!r}", param="type")
    prompt = data.get("prompt")
    if isinstance(prompt, str) and len(prompt) > max_prompt_chars:
        raise TooLargeError(f"field 'prompt': over the {max_prompt_chars}-character limit", param="prompt")
    try:
        return _CLIENT_ADAPTER.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"][1:]) or "type"  # loc[0] is the union tag
        raise BadRequestError(f"field {field!r}: {err['msg']}", param=field) from None


# ---- server -> client -------------------------------------------------------------------------

class SessionStarted(_Message):
    type: Literal["session.started"] = "session.started"
    session_id: str
    model: str
    width: int
    height: int
    fps: int | float
    chunk_frames: int  # latent frames per chunk
    format: str
    max_lead_s: float | None  # most video generated ahead of the viewer's playback clock


class SessionUpdateApplied(_Message):
    type: Literal["session.update.applied"] = "session.update.applied"
    event_id: str | int | None
    chunk_index: int  # the first chunk generated under the new prompt
    media_time_s: float  # where that chunk starts in the session's video
    latency_s: float  # from the update's arrival to that media time reaching the viewer's clock


class Stats(_Message):
    type: Literal["stats"] = "stats"
    generated_fps: float
    played_fps: float  # frames the real-time playback clock showed per second
    sent: int  # chunks sent so far
    dropped: int  # chunks dropped for this client so far
    queue_depth: int  # chunks waiting
    chunk_latency_ms: float  # mean, generation start -> sent, over the last interval
    lead_s: float  # video generated ahead of the playback clock
    max_lead_s: float | None  # the session's bound on lead_s
    last_switch_s: float | None  # latency of the last prompt switch
    underruns: int  # times the playback clock caught up with generation


class SessionBehind(_Message):
    type: Literal["session.behind"] = "session.behind"
    fps: int | float  # the stream's real-time frame rate
    achieved_fps: float  # what generation reached
    underruns: int


class SessionDone(_Message):
    type: Literal["session.done"] = "session.done"
    reason: Literal["stopped", "shutdown"]


class ErrorEvent(_Message):
    type: Literal["error"] = "error"
    code: str
    message: str


class Pong(_Message):
    type: Literal["pong"] = "pong"


SERVER_EVENTS = (SessionStarted, SessionUpdateApplied, Stats, SessionBehind, SessionDone, ErrorEvent, Pong)
ServerEvent = Annotated[Union[SERVER_EVENTS], Field(discriminator="type")]
_SERVER_ADAPTER: TypeAdapter = TypeAdapter(ServerEvent)
EVENT_TYPES = tuple(m.model_fields["type"].default for m in SERVER_EVENTS)


def parse_server_event(text: str) -> dict[str, Any]:
    """One JSON event from the server as a dict (ProtocolError if it is not an object with a
    string `type`; a known type with missing or mistyped fields is a ProtocolError too, unknown
    types pass through so a newer server can add events)."""
    event = _typed_object(text, ProtocolError, "the server")
    if event["type"] in EVENT_TYPES:
        try:
            _SERVER_ADAPTER.validate_python(event, strict=False)
        except ValidationError as exc:
            raise ProtocolError(f"malformed {event['type']} event: {exc.errors()[0]['msg']}: {text[:200]!r}") from None
    return event
