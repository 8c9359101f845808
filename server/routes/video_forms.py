"""The bodies of the video routes: JSON or multipart/form-data (what the OpenAI SDK sends), read
into typed requests, or an OpenAI-shaped error (server/rest_errors.py).

Malformed bodies are 400 (not JSON, not UTF-8, broken multipart, an undecodable file); well-formed
bodies with a bad value are 422 naming the field. Multipart values are strings (`seconds="4"`, as
the SDK sends them) and are converted like JSON values; a field may also be spelled the way form
encoders flatten objects (`video[id]`).
"""

from __future__ import annotations

import email.parser
import email.policy
import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from client.protocol.events import MAX_SEED
from server.rest_errors import api_error, invalid

MAX_FORM_PARTS = 32


@dataclass
class Upload:
    """A file part of a multipart body."""

    filename: str
    content_type: str
    data: bytes


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CreateRequest(_Body):
    """POST /v1/videos."""

    prompt: str = Field(min_length=1)
    seconds: float | None = Field(default=None, gt=0)  # None: the server's default
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    model: str | None = None  # must name the served model when given
    size: str | None = None  # "WxH": must be the served model's size when given
    image: str | None = None  # data URL of the first frame (framecast's JSON field)
    input_reference: dict | None = None  # JSON {"image_url": data URL} (the multipart file comes as an Upload)


class RemixRequest(_Body):
    """POST /v1/videos/{id}/remix."""

    prompt: str = Field(min_length=1)


class ExtendRequest(_Body):
    """POST /v1/videos/extensions (the uploaded clip, if any, comes as an Upload)."""

    prompt: str = Field(min_length=1)
    seconds: float | None = Field(default=None, gt=0)  # length of the new part (required without an audio file)
    video: dict | None = None  # {"id": "video_..."}: a finished job


async def read_body(request: Request) -> tuple[dict[str, Any], dict[str, Upload]]:
    """(fields, files) of a JSON or multipart/form-data body; a 400 when it is neither."""
    content_type = request.headers.get("content-type", "")
    raw = await request.body()
    if content_type.startswith("multipart/form-data"):
        return _multipart(content_type, raw)
    if content_type and not content_type.startswith("application/json"):
        raise api_error(400, f"unsupported content type {content_type.split(';')[0][:64]!r}: "
                            "send application/json or multipart/form-data", code="unsupported")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise api_error(400, "the body is not UTF-8") from None
    except (json.JSONDecodeError, RecursionError):
        raise api_error(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise api_error(400, "the body must be a JSON object")
    return data, {}


def _multipart(content_type: str, raw: bytes) -> tuple[dict[str, Any], dict[str, Upload]]:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    if not message.is_multipart() or message.defects:
        raise api_error(400, "the multipart/form-data body is malformed")
    fields: dict[str, Any] = {}
    files: dict[str, Upload] = {}
    parts = message.get_payload()
    if len(parts) > MAX_FORM_PARTS:
        raise api_error(400, f"more than {MAX_FORM_PARTS} form parts")
    for part in parts:
        name = part.get_param("name", header="content-disposition")
        if not name:
            raise api_error(400, "a form part has no name")
        data = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = Upload(filename=filename, content_type=part.get_content_type(), data=data)
            continue
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            raise api_error(400, f"form field {name[:64]!r} is not UTF-8") from None
        outer, sep, inner = name.partition("[")
        if sep and inner.endswith("]"):  # video[id] -> {"video": {"id": ...}}
            fields.setdefault(outer, {})[inner[:-1]] = value
        else:
            fields[name] = value
    return fields, files


def parse(model: type[BaseModel], fields: dict[str, Any]) -> Any:
    """The typed request, or a 422 naming the first bad field."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or "body"
        raise invalid(param, err["msg"]) from None
