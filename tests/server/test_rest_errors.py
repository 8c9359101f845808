"""Every REST error in OpenAI's shape (server/rest_errors.py): the body and class for a status, field
errors naming their field, the headers that go with an error, and the handlers `install` puts on the
app (our errors, FastAPI's validation errors, Starlette's HTTP errors, unexpected exceptions), the
last through a real server."""

import json
import logging

import httpx
import pytest
from fastapi.exceptions import RequestValidationError

from client.protocol.errors import (
    BadRequestError, CapacityError, InternalError, NotFoundError, UnauthorizedError, UnsupportedError,
)
from server.rest_errors import _validation_error, api_error, error_body, error_response, invalid
from tests.server_harness import start_server


def openai_error(message, type_, code, param=None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


@pytest.mark.parametrize("status, code, type_", [
    (400, "bad_request", "invalid_request_error"),
    (404, "not_found", "invalid_request_error"),
    (413, "too_large", "invalid_request_error"),
    (418, "bad_request", "invalid_request_error"),  # a 4xx without a code of its own
    (500, "internal", "server_error"),
    (502, "internal", "server_error"),  # a 5xx without a code of its own
    (503, "capacity", "server_error"),
])
def test_error_body_derives_the_code_from_the_status(status, code, type_):
    assert error_body(status, "nope") == openai_error("nope", type_, code)


def test_error_body_keeps_an_explicit_code_and_param():
    assert error_body(400, "no audio here", code="unsupported", param="audio") == openai_error(
        "no audio here", "invalid_request_error", "unsupported", "audio")


def test_api_error_is_the_class_of_its_code_answered_with_its_status_and_headers():
    exc = api_error(429, "the job queue is full", code="capacity", headers={"Retry-After": "7"})
    assert type(exc) is CapacityError and exc.status == 429 and exc.code == "capacity"
    response = error_response(exc)
    assert response.status_code == 429 and response.headers["retry-after"] == "7"  # not the class's 503
    assert json.loads(response.body) == openai_error("the job queue is full", "server_error", "capacity")
    assert type(api_error(404, "gone")) is NotFoundError and type(api_error(504, "slow")) is InternalError
    assert api_error(504, "slow").status == 504 and type(api_error(418, "tea")) is BadRequestError


def test_invalid_names_the_field_with_422_by_default():
    exc = invalid("seconds", "must be > 0")
    assert type(exc) is BadRequestError and exc.status == 422 and exc.param == "seconds"
    assert exc.message == "field 'seconds': must be > 0"
    other = invalid("size", "renders 64x64", status=400, code="unsupported")
    assert type(other) is UnsupportedError and (other.status, other.param) == (400, "size")


def test_error_response_status_and_auth_header():
    plain = error_response(NotFoundError("no such video"))  # no status given: the class's
    assert plain.status_code == 404 and "www-authenticate" not in plain.headers
    auth = error_response(UnauthorizedError("missing or invalid API key"))
    assert auth.status_code == 401 and auth.headers["www-authenticate"] == "Bearer"
    both = api_error(401, "expired", headers={"X-Reason": "expired"})
    assert dict(error_response(both).headers).items() >= {"www-authenticate": "Bearer", "x-reason": "expired"}.items()


@pytest.mark.parametrize("loc, param", [
    (("query", "limit"), "limit"),
    (("body", "video", "id"), "video.id"),
    (("body", "items", 2, "seed"), "items.seed"),  # list positions are not field names
])
def test_validation_errors_name_their_field(loc, param):
    exc = _validation_error(RequestValidationError([{"loc": loc, "msg": "Input should be a valid integer"}]))
    assert (exc.status, exc.param, exc.code) == (422, param, "bad_request")
    assert exc.message == f"field {param!r}: Input should be a valid integer"


def test_validation_errors_without_a_field_are_a_plain_422():
    undecodable = _validation_error(RequestValidationError([{"loc": ("body", 17), "msg": "JSON decode error"}]))
    assert (undecodable.status, undecodable.param, undecodable.message) == (422, None, "JSON decode error")
    empty = _validation_error(RequestValidationError([]))
    assert (empty.status, empty.param, empty.message) == (422, None, "invalid request")


# --- the handlers, through a real server --------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with start_server(tmp_path_factory.mktemp("rest-errors")) as srv:
        yield srv


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def test_our_errors_and_validation_errors(client):
    missing = client.get("/v1/videos/video_nope")
    assert missing.status_code == 404
    assert missing.json() == openai_error("no video 'video_nope'", "invalid_request_error", "not_found")
    bad = client.get("/v1/videos?limit=abc")
    assert bad.status_code == 422
    error = bad.json()["error"]
    assert (error["param"], error["code"], error["type"]) == ("limit", "bad_request", "invalid_request_error")
    assert error["message"].startswith("field 'limit': ") and "abc" not in error["message"]  # never echoes input


def test_starlette_http_errors_keep_their_status_and_headers(client):
    unknown = client.get("/v1/nothing-here")
    assert unknown.status_code == 404 and unknown.json() == openai_error("Not Found", "invalid_request_error",
                                                                         "not_found")
    wrong_method = client.put("/v1/videos")
    assert wrong_method.status_code == 405 and "POST" in wrong_method.headers["allow"]
    assert wrong_method.json() == openai_error("Method Not Allowed", "invalid_request_error", "bad_request")


def test_unexpected_exceptions_are_a_logged_500_without_details(server, client, monkeypatch, caplog):
    def broken(_video_id):
        raise RuntimeError("database password is hunter2")

    monkeypatch.setattr(server.app.state.framecast.store, "get", broken)
    with caplog.at_level(logging.ERROR, logger="framecast.server"):
        response = client.get("/v1/videos/video_any")
    assert response.status_code == 500
    assert response.json() == openai_error("internal server error", "server_error", "internal")
    assert "hunter2" not in response.text
    (record,) = [r for r in caplog.records if r.name == "framecast.server" and r.levelno == logging.ERROR]
    assert record.getMessage() == "GET /v1/videos/video_any failed"
    assert record.exc_info and "hunter2" in str(record.exc_info[1])  # the details go to the log
