"""The video routes' bodies (server/routes/video_forms.py): JSON or multipart/form-data read into
(fields, files), typed into requests, or an OpenAI error: 400 for a malformed body, 422 naming the
field for a bad value. Multipart bodies are built by httpx, the encoder the `openai` SDK sends with;
the last tests go through a real server."""

import asyncio
import json

import httpx
import pytest
from fastapi import Request

from client.protocol.errors import FramecastError
from client.protocol.events import MAX_SEED
from server.routes.video_forms import (
    MAX_FORM_PARTS, CreateRequest, ExtendRequest, RemixRequest, Upload, parse, read_body,
)
from tests.server_harness import start_server

PNG = b"\x89PNG\r\n\x1a\n\x00\xff\r\n--not-a-boundary"  # binary, not UTF-8, with CRLFs in it


def read(raw: bytes, content_type: str | None = "application/json"):
    """read_body of a POST with this body and content type."""
    headers = [(b"content-type", content_type.encode())] if content_type is not None else []

    async def receive():
        return {"type": "http.request", "body": raw, "more_body": False}

    return asyncio.run(read_body(Request({"type": "http", "method": "POST", "path": "/v1/videos", "headers": headers},
                                         receive)))


def read_form(fields: dict | list, files: dict | None = None):
    """read_body of the multipart body httpx encodes for `fields` (name, value pairs) and `files`."""
    pairs = list(fields.items()) if isinstance(fields, dict) else fields
    parts = [(name, (None, value)) for name, value in pairs] + list((files or {}).items())
    built = httpx.Request("POST", "http://test/v1/videos", files=parts)
    return read(built.read(), built.headers["content-type"])


def refusal(call, *args) -> FramecastError:
    with pytest.raises(FramecastError) as err:
        call(*args)
    return err.value


# --- JSON ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", None])
def test_json_objects_are_read_as_they_are(content_type):
    body = {"prompt": "a red ball", "seconds": 4, "video": {"id": "video_1"}, "extra": [1, None]}
    assert read(json.dumps(body).encode(), content_type) == (body, {})


@pytest.mark.parametrize("raw, message", [
    (b'{"prompt": "caf\xe9"}', "the body is not UTF-8"),
    (b'{"prompt": ', "the body is not valid JSON"),
    (b"", "the body is not valid JSON"),
    (b"[" * 100_000, "the body is not valid JSON"),  # nested past the recursion limit
    (b'["prompt"]', "the body must be a JSON object"),
    (b'"prompt"', "the body must be a JSON object"),
])
def test_malformed_json_is_400(raw, message):
    err = refusal(read, raw)
    assert (err.status, err.code, err.message, err.param) == (400, "bad_request", message, None)


def test_other_content_types_are_400_unsupported_naming_the_type():
    err = refusal(read, b"prompt=x", "application/x-www-form-urlencoded; charset=utf-8")
    assert (err.status, err.code) == (400, "unsupported")
    assert err.message == ("unsupported content type 'application/x-www-form-urlencoded': "
                           "send application/json or multipart/form-data")
    long = refusal(read, b"x", "text/" + "x" * 500)
    assert f"'text/{'x' * 59}'" in long.message and len(long.message) < 200  # cut at 64 characters


# --- multipart ----------------------------------------------------------------------------------

def test_multipart_fields_are_strings_and_files_are_uploads():
    fields, files = read_form({"prompt": "a red ball", "seconds": "4", "seed": "7", "video[id]": "video_1",
                               "video[note]": "café"},
                              {"input_reference": ("ref.png", PNG, "image/png")})
    assert fields == {"prompt": "a red ball", "seconds": "4", "seed": "7",
                      "video": {"id": "video_1", "note": "café"}}  # flattened objects put back together
    assert files == {"input_reference": Upload(filename="ref.png", content_type="image/png", data=PNG)}


def test_only_bracketed_names_are_nested():
    fields, _ = read_form({"video[id": "a", "video]": "b", "plain": "c"})
    assert fields == {"video[id": "a", "video]": "b", "plain": "c"}


@pytest.mark.parametrize("raw, message", [
    (b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nx\r\n', "the multipart/form-data body is malformed"),
    (b"not multipart at all", "the multipart/form-data body is malformed"),
    (b'--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n', "a form part has no name"),
    (b'--b\r\nContent-Disposition: form-data; name=""\r\n\r\nx\r\n--b--\r\n', "a form part has no name"),
    (b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\ncaf\xe9\r\n--b--\r\n',
     "form field 'prompt' is not UTF-8"),
])
def test_malformed_multipart_is_400(raw, message):
    err = refusal(read, raw, "multipart/form-data; boundary=b")
    assert (err.status, err.code, err.message) == (400, "bad_request", message)


def test_at_most_max_form_parts():
    fields, _ = read_form([(f"f{i}", "x") for i in range(MAX_FORM_PARTS)])
    assert len(fields) == MAX_FORM_PARTS
    err = refusal(read_form, [(f"f{i}", "x") for i in range(MAX_FORM_PARTS + 1)])
    assert (err.status, err.message) == (400, f"more than {MAX_FORM_PARTS} form parts")


# --- typed requests -----------------------------------------------------------------------------

def test_form_strings_become_typed_requests_and_unknown_fields_are_ignored():
    create = parse(CreateRequest, {"prompt": "a ball", "seconds": "2.5", "seed": "7", "quality": "high"})
    assert (create.prompt, create.seconds, create.seed, create.model, create.image) == ("a ball", 2.5, 7, None, None)
    extend = parse(ExtendRequest, {"prompt": "on", "seconds": "1", "video": {"id": "video_1"}})
    assert (extend.seconds, extend.video) == (1.0, {"id": "video_1"})
    assert parse(RemixRequest, {"prompt": "blue"}).prompt == "blue"


@pytest.mark.parametrize("model, fields, param", [
    (CreateRequest, {"seconds": "4"}, "prompt"),
    (CreateRequest, {"prompt": ""}, "prompt"),
    (CreateRequest, {"prompt": "x", "seconds": "0"}, "seconds"),
    (CreateRequest, {"prompt": "x", "seconds": "four"}, "seconds"),
    (CreateRequest, {"prompt": "x", "seed": str(MAX_SEED + 1)}, "seed"),
    (CreateRequest, {"prompt": "x", "seed": "-1"}, "seed"),
    (CreateRequest, {"prompt": "x", "input_reference": "not an object"}, "input_reference"),
    (ExtendRequest, {"prompt": "x", "video": "video_1"}, "video"),
])
def test_bad_values_are_422_naming_the_field(model, fields, param):
    err = refusal(parse, model, fields)
    assert (err.status, err.code, err.param) == (422, "bad_request", param)
    assert err.message.startswith(f"field {param!r}: ")


def test_the_first_bad_field_is_named():
    assert refusal(parse, CreateRequest, {"seconds": "-1", "seed": "x"}).param == "prompt"  # in field order


# --- through a real server ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with start_server(tmp_path_factory.mktemp("video-forms")) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        yield c


def test_the_video_routes_read_their_bodies_here(client):
    plain = client.post("/v1/videos", content=b"prompt=x", headers={"content-type": "text/plain"})
    assert plain.status_code == 400 and plain.json()["error"]["code"] == "unsupported"
    typed = client.post("/v1/videos", files={"prompt": (None, "x"), "seconds": (None, "four")})
    assert typed.status_code == 422 and typed.json()["error"]["param"] == "seconds"
    # the form spelling of {"video": {"id": ...}} reaches the extension route as that object
    extend = client.post("/v1/videos/extensions", files={"prompt": (None, "x"), "seconds": (None, "1"),
                                                         "video[id]": (None, "video_missing")})
    assert extend.status_code == 404 and extend.json()["error"]["message"] == "no video 'video_missing'"
    many = client.post("/v1/videos", files=[(f"f{i}", (None, "x")) for i in range(MAX_FORM_PARTS + 1)])
    assert many.status_code == 400 and many.json()["error"]["message"] == f"more than {MAX_FORM_PARTS} form parts"
