"""Request bodies over the byte limit get 413 (server/body_limit.py): declared or streamed, with the
rest of the body read and dropped first (up to DRAIN_BYTES), a larger limit for multipart POSTs to
the upload paths, and the app's own answer to a truncated body never sent. The middleware is driven
with scripted ASGI messages (to count what it reads), then through a real server."""

import asyncio
import json

import pytest

from server import body_limit
from server.body_limit import BodySizeLimit
from tests.server_harness import start_server

LIMIT = 100


class EchoApp:
    """A plain ASGI app: reads its whole body, then once more (as a disconnect listener would), and
    answers 200 with the body's length."""

    def __init__(self, respond_first: bool = False, fail: Exception | None = None):
        self.respond_first, self.fail = respond_first, fail
        self.calls, self.body, self.next_message, self.receive = 0, None, None, None

    async def __call__(self, scope, receive, send):
        self.calls += 1
        self.receive = receive
        if scope["type"] != "http":
            return
        if self.respond_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        self.body = body
        self.next_message = (await receive())["type"]
        if self.fail:
            raise self.fail
        if not self.respond_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})


def request(app, chunks, *, path="/v1/videos", method="POST", content_type=b"application/json", declared=None,
            scope_type="http", **limits):
    """Run one request through BodySizeLimit(app, LIMIT, **limits): (status, headers, body, messages it read)."""
    headers = [(b"content-type", content_type)]
    if declared is not None:
        headers.append((b"content-length", str(declared).encode()))
    scope = {"type": scope_type, "method": method, "path": path, "headers": headers}
    read = 0

    async def receive():
        nonlocal read
        if read < len(chunks):
            read += 1
            return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}
        return {"type": "http.disconnect"}

    sent = []

    async def send(message):
        sent.append(message)

    asyncio.run(BodySizeLimit(app, LIMIT, **limits)(scope, receive, send))
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) <= 1, sent  # one answer, never two
    if not starts:
        return None, {}, b"", read
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return starts[0]["status"], dict(starts[0]["headers"]), body, read


def assert_413(status, headers, body, limit=LIMIT):
    assert status == 413
    assert headers[b"content-type"] == b"application/json" and headers[b"connection"] == b"close"
    assert int(headers[b"content-length"]) == len(body)
    assert json.loads(body) == {"error": {"message": f"request body over the {limit}-byte limit",
                                          "type": "invalid_request_error", "param": None, "code": "too_large"}}


def test_declared_length_over_the_limit_is_413_before_the_app_runs_and_the_body_is_drained():
    app = EchoApp()
    status, headers, body, read = request(app, [b"x" * 50] * 3, declared=150)
    assert_413(status, headers, body)
    assert app.calls == 0 and read == 3  # every part of the body read (a socket closed on unread bytes resets)


def test_a_body_of_exactly_the_limit_passes_declared_or_streamed():
    for declared in (LIMIT, None):
        app = EchoApp()
        status, _, body, _ = request(app, [b"x" * 60, b"x" * 40], declared=declared)
        assert (status, body, app.body) == (200, b"100", b"x" * LIMIT)


def test_streamed_body_over_the_limit_gets_413_in_place_of_the_apps_answer():
    app = EchoApp()
    status, headers, body, read = request(app, [b"x" * 40] * 5)  # no content-length: counted as it arrives
    assert_413(status, headers, body)
    assert app.calls == 1 and app.body == b"x" * 80  # the app saw the body cut before the part that went over
    assert app.next_message == "http.disconnect"  # and nothing after it
    assert read == 5  # the rest was drained before the 413


def test_an_unparsable_content_length_is_counted_instead():
    app = EchoApp()
    assert request(app, [b"x" * 10], declared="1e9")[:3] == (200, {}, b"10")
    assert_413(*request(EchoApp(), [b"x" * 101], declared="-5")[:3])


def test_draining_stops_after_drain_bytes(monkeypatch):
    monkeypatch.setattr(body_limit, "DRAIN_BYTES", 120)
    status, headers, body, read = request(EchoApp(), [b"x" * 50] * 1000, declared=50_000)
    assert_413(status, headers, body)
    assert read == 3  # 50, 100, 150 bytes dropped: past 120 the upload is cut off
    status, headers, body, read = request(EchoApp(), [b"x" * 50] * 1000)  # streamed
    assert_413(status, headers, body)
    assert read == 3 + 3  # 3 parts to go over the limit, then 3 more dropped


@pytest.mark.parametrize("path, method, content_type, declared, status", [
    ("/v1/videos", "POST", b"multipart/form-data; boundary=b", 1000, 200),
    ("/v1/videos/", "POST", b"multipart/form-data; boundary=b", 1000, 200),  # trailing slash: same path
    ("/v1/videos/extensions", "POST", b"multipart/form-data; boundary=b", 1000, 200),
    ("/v1/videos", "POST", b"multipart/form-data; boundary=b", 1001, 413),  # over the upload limit
    ("/v1/videos", "POST", b"application/json", 1000, 413),  # uploads are multipart
    ("/v1/videos", "PUT", b"multipart/form-data; boundary=b", 1000, 413),  # uploads are POSTs
    ("/v1/videos/x/remix", "POST", b"multipart/form-data; boundary=b", 1000, 413),  # not an upload path
])
def test_multipart_posts_to_upload_paths_get_the_upload_limit(path, method, content_type, declared, status):
    got, _, body, _ = request(EchoApp(), [b"x" * declared], path=path, method=method, content_type=content_type,
                              declared=declared, upload_paths=("/v1/videos", "/v1/videos/extensions"),
                              upload_max_bytes=1000)
    assert got == status
    if status == 413:
        limit = 1000 if content_type.startswith(b"multipart") and method == "POST" and "remix" not in path else LIMIT
        assert json.loads(body)["error"]["message"] == f"request body over the {limit}-byte limit"


def test_an_upload_limit_below_the_plain_limit_is_raised_to_it():
    got = request(EchoApp(), [b"x" * LIMIT], content_type=b"multipart/form-data; boundary=b", declared=LIMIT,
                  upload_paths=("/v1/videos",))  # upload_max_bytes left at 0
    assert got[0] == 200


@pytest.mark.parametrize("scope_type", ["websocket", "lifespan"])
def test_other_scopes_pass_through_untouched(scope_type):
    app = EchoApp()
    request(app, [b"x" * 500], scope_type=scope_type, declared=500)
    assert app.calls == 1 and app.receive.__name__ == "receive"  # the server's own receive, not a wrapper


def test_app_errors_over_the_limit_become_the_413_and_others_propagate():
    failing = EchoApp(fail=ValueError("truncated body"))
    assert_413(*request(failing, [b"x" * 60] * 2)[:3])  # the app choked on the cut body: still a quiet 413
    with pytest.raises(ValueError, match="truncated body"):
        request(EchoApp(fail=ValueError("truncated body")), [b"x" * 60])


def test_an_app_that_answered_before_going_over_keeps_its_answer():
    status, _, body, _ = request(EchoApp(respond_first=True), [b"x" * 60] * 2)
    assert (status, body) == (200, b"60")  # headers already sent: no 413 can follow them


# --- through a real server ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with start_server(tmp_path_factory.mktemp("body-limit"), max_message_bytes=2048, max_upload_bytes=8192) as srv:
        yield srv


def test_the_servers_json_and_upload_limits(server):
    import httpx

    with httpx.Client(base_url=server.url, timeout=30) as client:
        over = client.post("/v1/videos", json={"prompt": "x", "pad": "y" * 3000})
        assert over.status_code == 413 and over.headers["connection"] == "close"
        assert over.json()["error"] == {"message": "request body over the 2048-byte limit",
                                        "type": "invalid_request_error", "param": None, "code": "too_large"}
        # the same bytes as a form upload are under the upload limit: read, then refused for what they say
        form = client.post("/v1/videos", files={"pad": (None, "y" * 3000)})
        assert form.status_code == 422 and form.json()["error"]["param"] == "prompt"
        upload = client.post("/v1/videos", files={"prompt": (None, "x"), "input_reference": ("a.png", b"y" * 9000)})
        assert upload.status_code == 413
        assert upload.json()["error"]["message"] == "request body over the 8192-byte limit"
        assert client.get("/healthz").status_code == 200
