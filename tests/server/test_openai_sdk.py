"""The video job API driven by the official `openai` SDK against a real server (uvicorn, model tiny).

Covers: create (multipart as the SDK sends it, and JSON), input_reference uploads, polling, every
content variant, list pagination, remix, extensions (of a job id, an uploaded clip, and of an
extension), delete, and each error class the SDK raises.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import httpx
import numpy as np
import pytest
from PIL import Image

from server.media import read_frames, seam_ratio
from tests.server_harness import REPO, clean_env, sdk_client, start_server

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks its video methods deprecated
FPS = 16  # the tiny model's
SECONDS = "0.5"  # 8 frames: two chunks of the tiny model


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with start_server(tmp_path_factory.mktemp("sdk"), max_running_jobs=1) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with sdk_client(server.url, timeout=60) as c:
        yield c


def finished(client, video_id):
    video = client.videos.poll(video_id, poll_interval_ms=200)
    assert video.status == "completed", video.error
    return video


def frames_of(client, video_id, tmp_path) -> np.ndarray:
    path = tmp_path / f"{video_id}.mp4"
    client.videos.download_content(video_id, variant="video").write_to_file(path)
    return read_frames(path)  # [T, H, W, 3]


def image_bytes(fmt: str, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def base_video(client):
    """A finished multipart-created job (seed 3)."""
    video = client.videos.create(model="tiny", prompt="a red ball", seconds=SECONDS, extra_body={"seed": 3})
    return finished(client, video.id)


def test_multipart_create_gives_an_openai_video_object(client, base_video):
    assert base_video.object == "video" and base_video.model == "tiny" and base_video.seconds == SECONDS
    assert base_video.size == "64x64" and base_video.progress == 100 and base_video.completed_at
    assert base_video.remixed_from_video_id is None and base_video.error is None
    assert base_video.model_extra["seed"] == 3  # framecast extra


def test_json_create_same_seed_same_frames_and_same_as_framecast_generate(client, base_video, tmp_path):
    video = client.post("/videos", cast_to=openai.types.Video,
                        body={"model": "tiny", "prompt": "a red ball", "seconds": SECONDS, "seed": 3})
    finished(client, video.id)
    expected = frames_of(client, base_video.id, tmp_path)
    assert expected.shape == (8, 64, 64, 3)
    np.testing.assert_array_equal(frames_of(client, video.id, tmp_path), expected)
    out = tmp_path / "generate.mp4"  # another process, same request
    subprocess.run([sys.executable, "-m", "client.cli", "generate", "a red ball", "--model", "tiny", "--seed", "3",
                    "--seconds", SECONDS, "--device", "cpu", "-o", str(out)], cwd=REPO, env=clean_env(), check=True,
                   capture_output=True)
    np.testing.assert_array_equal(read_frames(out), expected)


def test_variants(client, base_video):
    thumbnail = client.videos.download_content(base_video.id, variant="thumbnail")
    assert thumbnail.response.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(thumbnail.content)).size == (64, 64)
    sheet = client.videos.download_content(base_video.id, variant="spritesheet")
    assert sheet.response.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(sheet.content)).size == (3 * 64, 3 * 64)  # 8 frames in a 3 x 3 grid
    with pytest.raises(openai.NotFoundError) as err:
        client.videos.download_content(base_video.id, variant="poster")
    assert err.value.body["param"] == "variant"


@pytest.mark.parametrize("fmt, mime", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_input_reference_upload(client, fmt, mime, tmp_path):
    video = client.videos.create(model="tiny", prompt="from a picture", seconds=SECONDS,
                                 input_reference=(f"start.{fmt.lower()}", image_bytes(fmt), mime))
    finished(client, video.id)
    assert frames_of(client, video.id, tmp_path).shape == (8, 64, 64, 3)


def test_bad_input_reference_is_bad_request(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.videos.create(prompt="x", seconds=SECONDS, input_reference=("a.png", b"not a png", "image/png"))
    assert err.value.body["param"] == "input_reference" and err.value.code == "bad_request"
    with pytest.raises(openai.BadRequestError) as err:
        client.videos.create(prompt="x", seconds=SECONDS, input_reference=("a.txt", b"hello", "text/plain"))
    assert err.value.code == "unsupported"


def test_list_paginates(client):
    ids = [client.videos.create(prompt=f"list {i}", seconds=SECONDS).id for i in range(3)]
    page = client.videos.list(limit=2)
    assert [v.id for v in page.data] == ids[::-1][:2] and page.has_more
    seen = [v.id for v in client.videos.list(limit=2)]  # the SDK follows `last_id` / `after`
    assert seen[:3] == ids[::-1] and len(seen) == len(set(seen))
    oldest_first = [v.id for v in client.videos.list(limit=2, order="asc")]
    assert oldest_first == seen[::-1]
    for video_id in ids:
        client.videos.delete(video_id)


def test_remix_reuses_seed_and_length(client, base_video, tmp_path):
    remix = client.videos.remix(base_video.id, prompt="a green square")
    assert remix.remixed_from_video_id == base_video.id and remix.seconds == SECONDS
    assert remix.model_extra["seed"] == 3 and remix.prompt == "a green square"
    finished(client, remix.id)
    assert frames_of(client, remix.id, tmp_path).shape == (8, 64, 64, 3)


def test_extend_a_job_and_its_extension(client, server, base_video, tmp_path):
    source = frames_of(client, base_video.id, tmp_path)
    first = client.post("/videos/extensions", cast_to=openai.types.Video,
                        body={"prompt": "a green square", "seconds": SECONDS, "video": {"id": base_video.id}})
    assert first.seconds == "1" and first.model_extra["extends_video_id"] == base_video.id
    finished(client, first.id)
    stitched = frames_of(client, first.id, tmp_path)
    assert stitched.shape == (16, 64, 64, 3)
    np.testing.assert_array_equal(stitched[:8], source)  # the source's packets, copied
    assert seam_ratio(stitched, 8) < 3
    # an extension of the extension, through the form field the SDK's form encoder would write
    second = httpx.post(server.url + "/v1/videos/extensions", timeout=30,
                        files={"prompt": (None, "a blue circle"), "seconds": (None, SECONDS), "video[id]": (None, first.id)})
    assert second.status_code == 200, second.text
    finished(client, second.json()["id"])
    twice = frames_of(client, second.json()["id"], tmp_path)
    assert twice.shape == (24, 64, 64, 3)
    np.testing.assert_array_equal(twice[:16], stitched)
    assert seam_ratio(twice, 16) < 3
    with pytest.raises(openai.NotFoundError):
        client.post("/videos/extensions", cast_to=openai.types.Video,
                    body={"prompt": "x", "seconds": SECONDS, "video": {"id": "video_missing"}})


def test_extend_an_uploaded_clip(client, tmp_path):
    clip = tmp_path / "clip.mp4"  # another size and frame rate: 96x80 at 10 fps, 1 s
    frames = np.zeros((10, 80, 96, 3), np.uint8)
    for i in range(10):
        frames[i, :, : 8 * (i + 1)] = (40, 160, 220)
    from client.mp4_writer import Mp4Writer

    with Mp4Writer(clip, fps=10) as writer:
        writer.write(frames)
    video = client.videos.extend(video=("clip.mp4", clip.read_bytes(), "video/mp4"), prompt="go on", seconds=SECONDS)
    assert video.seconds == "1.5"  # 16 frames of the clip at 16 fps + 8 new
    finished(client, video.id)
    assert frames_of(client, video.id, tmp_path).shape == (24, 64, 64, 3)
    with pytest.raises(openai.BadRequestError) as err:
        client.videos.extend(video=("clip.mp4", b"\x00\x00\x00\x18ftypmp42 not really", "video/mp4"),
                             prompt="go on", seconds=SECONDS)
    assert err.value.body["param"] == "video"


def test_delete_removes_the_record_and_every_file(client, server, tmp_path):
    video = client.videos.create(prompt="to delete", seconds=SECONDS, extra_body={"seed": 1})
    finished(client, video.id)
    extension = client.videos.extend(video=("c.mp4", _tiny_clip(tmp_path), "video/mp4"), prompt="x", seconds=SECONDS)
    finished(client, extension.id)
    data_dir = server.app.state.settings.data_dir
    for video_id in (video.id, extension.id):
        assert list(data_dir.rglob(f"{video_id}*"))  # video, stills, resume state (and the upload)
        deleted = client.videos.delete(video_id)
        assert (deleted.id, deleted.object, deleted.deleted) == (video_id, "video.deleted", True)
        assert not list(data_dir.rglob(f"{video_id}*"))
        with pytest.raises(openai.NotFoundError):
            client.videos.retrieve(video_id)


def _tiny_clip(tmp_path) -> bytes:
    from client.mp4_writer import Mp4Writer

    path = tmp_path / "tiny.mp4"
    with Mp4Writer(path, fps=16) as writer:
        writer.write(np.full((9, 64, 64, 3), 90, np.uint8))
    return path.read_bytes()


def test_request_errors(client, server):
    with pytest.raises(openai.NotFoundError) as err:
        client.videos.retrieve("video_missing")
    assert err.value.code == "not_found" and err.value.type == "invalid_request_error"
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.videos.create(prompt="x", seconds="-1")
    assert err.value.body["param"] == "seconds"
    with pytest.raises(openai.UnprocessableEntityError):
        client.videos.create(prompt="x", size="1280x720")
    with pytest.raises(openai.BadRequestError):  # a body that is not UTF-8
        client.post("/videos", cast_to=openai.types.Video, content=b'{"prompt": "\xff"}',
                    options={"headers": {"Content-Type": "application/json"}})
    with pytest.raises(openai.APIStatusError) as err:
        client.post("/videos", cast_to=openai.types.Video, body={"prompt": "x" * (2 << 20)})
    assert err.value.status_code == 413 and err.value.code == "too_large"


def test_internal_error_is_500_without_traceback(client, server, monkeypatch):
    store = server.app.state.framecast.store

    def broken(_video_id):
        raise RuntimeError("database on fire")

    monkeypatch.setattr(store, "get", broken)
    with pytest.raises(openai.InternalServerError) as err:
        client.videos.retrieve("video_any")
    assert err.value.code == "internal" and "fire" not in json.dumps(err.value.body)


def test_auth_conflict_and_full_queue(tmp_path):
    with start_server(tmp_path, api_keys=["sk-good"], max_running_jobs=0, max_queued_jobs=1) as srv:
        with openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-bad", max_retries=0) as bad:
            with pytest.raises(openai.AuthenticationError) as err:
                bad.videos.list()
            assert err.value.code == "unauthorized"
        with openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-good", max_retries=0) as good:
            queued = good.videos.create(prompt="waits", seconds=SECONDS)  # no job slot: stays queued
            with pytest.raises(openai.ConflictError):
                good.videos.download_content(queued.id)
            with pytest.raises(openai.ConflictError):
                good.post("/videos/extensions", cast_to=openai.types.Video,
                          body={"prompt": "x", "seconds": SECONDS, "video": {"id": queued.id}})
            with pytest.raises(openai.RateLimitError) as err:
                good.videos.create(prompt="one too many", seconds=SECONDS)
            assert err.value.response.headers["retry-after"] == "10" and err.value.code == "capacity"
