"""Typed errors, URL/auth helpers and image data URLs of the Python client."""

import base64
import io

import httpx
import pytest
from PIL import Image

from client.data_url import image_data_url
from client.errors import (
    BadRequestError,
    CapacityError,
    FramecastError,
    InternalError,
    NotFoundError,
    TooLargeError,
    UnauthorizedError,
    error_from_close,
    error_from_code,
    error_from_http,
)
from client.http_common import raise_for_error, resolve_base_url, token_from_session_response, websocket_url


def test_one_class_per_code_with_its_rest_and_websocket_forms():
    err = CapacityError("all 4 session slots are busy")
    assert err.event() == {"type": "error", "code": "capacity", "message": "all 4 session slots are busy"}
    assert err.body() == {"error": {"message": "all 4 session slots are busy", "type": "server_error", "param": None,
                                    "code": "capacity"}}
    assert (err.http_status, err.close_code) == (503, 1013)
    bad = BadRequestError("field 'seed': not an integer", param="seed")
    assert bad.body()["error"]["param"] == "seed" and bad.body()["error"]["type"] == "invalid_request_error"
    assert error_from_close(1013, "busy").code == "capacity" and error_from_close(4000, "").code == "connection_lost"


def test_codes_map_to_classes_and_keep_the_code():
    err = error_from_code("capacity", "no slot")
    assert isinstance(err, CapacityError) and err.code == "capacity" and err.message == "no slot"
    unknown = error_from_code("brand_new_code", "??")
    assert type(unknown) is FramecastError and unknown.code == "brand_new_code"


@pytest.mark.parametrize(
    "status, body, cls, message",
    [
        (400, {"error": {"code": "bad_request", "message": "prompt missing"}}, BadRequestError, "prompt missing"),
        (404, {"error": {"message": "no such video", "type": "invalid_request_error", "param": None,
                         "code": "not_found"}}, NotFoundError, "no such video"),
        (401, {"error": {"code": "unauthorized", "message": "bad key"}}, UnauthorizedError, "bad key"),
        (422, {"error": {"code": "too_large", "message": "field 'prompt': too long", "param": "prompt"}},
         TooLargeError, "field 'prompt': too long"),
        (503, "busy", CapacityError, "busy"),  # a proxy's plain-text answer: the code comes from the status
        (502, {"unexpected": "shape"}, InternalError, "HTTP 502"),
    ],
)
def test_http_error_bodies(status, body, cls, message):
    err = error_from_http(status, body)
    assert isinstance(err, cls) and err.message == message and err.status == status


def test_raise_for_error_uses_the_response():
    request = httpx.Request("GET", "http://x/v1/videos/1")
    with pytest.raises(NotFoundError, match="gone"):
        raise_for_error(httpx.Response(404, json={"error": {"code": "not_found", "message": "gone"}}, request=request))
    raise_for_error(httpx.Response(200, json={}, request=request))


def test_base_url_resolution(monkeypatch):
    monkeypatch.delenv("FRAMECAST_URL", raising=False)
    assert resolve_base_url(None) == "http://127.0.0.1:8000"
    monkeypatch.setenv("FRAMECAST_URL", "ws://example.org:9/")
    assert resolve_base_url(None) == "http://example.org:9"
    assert resolve_base_url("localhost:8001") == "http://localhost:8001"
    assert websocket_url("https://h/api", "/v1/realtime") == "wss://h/api/v1/realtime"
    with pytest.raises(ValueError, match="http"):
        resolve_base_url("ftp://x")


def test_token_shapes():
    assert token_from_session_response({"token": "t1"}) == "t1"
    assert token_from_session_response({"client_secret": {"value": "t2", "expires_at": 1}}) == "t2"
    with pytest.raises(FramecastError, match="without a token"):
        token_from_session_response({"expires_at": 3})


def test_image_data_url_detects_type(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, format="PNG")
    path = tmp_path / "pic.jpg"  # name lies: content decides
    path.write_bytes(buffer.getvalue())
    url = image_data_url(path)
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == buffer.getvalue()
    assert image_data_url(url) == url
    with pytest.raises(ValueError, match="not a readable image"):
        image_data_url(b"hello")
