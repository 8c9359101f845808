"""REST video jobs and auth against a real uvicorn on 127.0.0.1 (model tiny)."""

import json
import subprocess
import time

import pytest

from tests.server_harness import http, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with start_server(tmp_path_factory.mktemp("jobs")) as srv:
        yield srv


def wait_for(server, video_id, statuses, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, video = http("GET", f"{server.url}/v1/videos/{video_id}")
        assert status == 200
        if video["status"] in statuses:
            return video
        time.sleep(0.2)
    raise AssertionError(f"{video_id} stuck in {video['status']}")


def test_job_completes_with_requested_frames(server, tmp_path):
    status, video = http("POST", server.url + "/v1/videos", {"prompt": "a ball", "seconds": 0.75, "seed": 1})
    assert status == 200 and video["object"] == "video" and video["status"] in ("queued", "in_progress")
    assert http("GET", f"{server.url}/v1/videos/{video['id']}/content")[0] == 409  # not finished yet
    done = wait_for(server, video["id"], ("completed", "failed"))
    assert done["status"] == "completed" and done["progress"] == 100 and done["completed_at"]
    status, content = http("GET", f"{server.url}/v1/videos/{video['id']}/content")
    assert status == 200
    path = tmp_path / "job.mp4"
    path.write_bytes(content)
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                            "stream=codec_name,width,height,nb_read_frames", "-of", "json", str(path)],
                           capture_output=True, text=True, check=True)
    stream = json.loads(probe.stdout)["streams"][0]
    assert (stream["codec_name"], stream["width"], int(stream["nb_read_frames"])) == ("h264", 64, 12)  # 0.75 s x 16


def test_cancel_list_and_not_found(server):
    ids = [http("POST", server.url + "/v1/videos", {"prompt": f"long {i}", "seconds": 30})[1]["id"] for i in range(2)]
    for video_id in ids:
        status, video = http("DELETE", f"{server.url}/v1/videos/{video_id}")
        assert status == 200 and video["status"] == "cancelled"
    assert http("GET", f"{server.url}/v1/videos/{ids[0]}/content")[0] == 409
    status, page = http("GET", server.url + "/v1/videos?limit=1")
    assert status == 200 and page["data"][0]["id"] == ids[1] and page["has_more"]
    status, page2 = http("GET", f"{server.url}/v1/videos?limit=1&after={ids[1]}")
    assert page2["data"][0]["id"] == ids[0]
    assert http("GET", server.url + "/v1/videos/video_nope")[0] == 404
    assert http("DELETE", server.url + "/v1/videos/video_nope")[0] == 404


def assert_openai_error(body, code: str, param: str | None = None) -> None:
    """OpenAI's error shape, with the code the realtime socket would send for the same mistake."""
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["code"] == code and body["error"]["param"] == param, body
    assert body["error"]["message"] and "Traceback" not in body["error"]["message"]


@pytest.mark.parametrize("body, field, code", [
    (b"{not json", None, "bad_request"),
    ({"seconds": 1}, "prompt", "bad_request"),
    ({"prompt": "x", "seconds": -1}, "seconds", "bad_request"),
    ({"prompt": "x", "seconds": 1e6}, "seconds", "bad_request"),
    ({"prompt": "x", "seed": "abc"}, "seed", "bad_request"),
    ({"prompt": "x" * 5000}, "prompt", "too_large"),
    ({"prompt": "x", "model": "other"}, "model", "unsupported"),
    ({"prompt": "x", "image": "data:image/png;base64,aGVsbG8="}, "image", "bad_request"),
])
def test_invalid_requests_are_422_naming_the_field(server, body, field, code):
    status, error = http("POST", server.url + "/v1/videos", body)
    assert status == 422
    assert_openai_error(error, code, field)
    assert error["error"]["type"] == "invalid_request_error"


def test_other_rest_errors_have_the_openai_shape(server):
    status, error = http("POST", server.url + "/v1/videos", {"prompt": "x" * (16 << 20)})
    assert status == 413
    assert_openai_error(error, "too_large")
    assert http("GET", server.url + "/healthz")[0] == 200
    status, error = http("GET", server.url + "/v1/videos/video_nope")
    assert status == 404 and error["error"]["type"] == "invalid_request_error"
    assert_openai_error(error, "not_found")
    status, error = http("GET", server.url + "/v1/videos?limit=0")
    assert status == 422
    assert_openai_error(error, "bad_request", "limit")
