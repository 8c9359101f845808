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


def test_delete_list_and_not_found(server):
    ids = [http("POST", server.url + "/v1/videos", {"prompt": f"long {i}", "seconds": 30})[1]["id"] for i in range(3)]
    status, page = http("GET", server.url + "/v1/videos?limit=1")
    assert status == 200 and page["data"][0]["id"] == ids[2] and page["has_more"]
    status, page2 = http("GET", f"{server.url}/v1/videos?limit=1&after={ids[2]}")
    assert page2["data"][0]["id"] == ids[1]
    for video_id in ids:  # queued or running: cancelled, then deleted
        status, deleted = http("DELETE", f"{server.url}/v1/videos/{video_id}")
        assert status == 200 and deleted == {"id": video_id, "object": "video.deleted", "deleted": True}
        assert http("GET", f"{server.url}/v1/videos/{video_id}")[0] == 404
    assert http("GET", f"{server.url}/v1/videos/{ids[0]}/content")[0] == 404
    status, error = http("GET", server.url + "/v1/videos/video_nope")
    assert status == 404 and error["error"]["code"] == "not_found" and error["error"]["type"] == "invalid_request_error"
    assert http("DELETE", server.url + "/v1/videos/video_nope")[0] == 404


def assert_openai_error(body, code: str, param: str | None = None) -> None:
    """OpenAI's error shape, with the code the realtime socket would send for the same mistake."""
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["code"] == code and body["error"]["param"] == param, body
    assert body["error"]["message"] and "Traceback" not in body["error"]["message"]


@pytest.mark.parametrize("body, status, field, code", [
    (b"{not json", 400, None, "bad_request"),
    (b'{"prompt": "caf\xe9"}', 400, None, "bad_request"),  # latin-1, not UTF-8
    (b"[1, 2]", 400, None, "bad_request"),
    ({"seconds": 1}, 422, "prompt", "bad_request"),
    ({"prompt": "x", "seconds": -1}, 422, "seconds", "bad_request"),
    ({"prompt": "x", "seconds": 1e6}, 422, "seconds", "bad_request"),
    ({"prompt": "x", "seed": "abc"}, 422, "seed", "bad_request"),
    ({"prompt": "x" * 5000}, 422, "prompt", "too_large"),
    ({"prompt": "x", "model": "other"}, 422, "model", "unsupported"),
    ({"prompt": "x", "size": "1280x720"}, 422, "size", "unsupported"),
    ({"prompt": "x", "image": "data:image/png;base64,aGVsbG8="}, 400, "image", "bad_request"),  # not an image
])
def test_invalid_requests_are_openai_errors(server, body, status, field, code):
    got, error = http("POST", server.url + "/v1/videos", body)
    assert got == status, error
    assert_openai_error(error, code, field)


def test_too_long_request_is_413(server):
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
