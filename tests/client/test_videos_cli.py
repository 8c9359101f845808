"""`framecast videos` (client/videos_cli.py) against an in-process `tiny` server, cross-checked with the
official `openai` SDK: what tests/client/test_live.py::test_videos_cli leaves out (extending a video
file, paging, default download names, delete, and the usage errors that must not reach the server)."""

from __future__ import annotations

import io
import json

import av
import numpy as np
import pytest

from client.cli import main
from tests.server_harness import free_port, sdk_client, start_server, tiny_generator

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks its video methods deprecated


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with start_server(tmp_path_factory.mktemp("videos-cli"), max_running_jobs=1) as srv:
        yield srv


@pytest.fixture(scope="module")
def sdk(server):
    with sdk_client(server.url) as client:
        yield client


@pytest.fixture(scope="module")
def seconds():
    info = tiny_generator().info
    return info.chunk_video_frames / info.fps  # one chunk


def frames_of(data: bytes) -> np.ndarray:
    """Decoded RGB frames [T, H, W, 3] of an MP4."""
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def cli_json(capsys, *argv: str) -> dict:
    """Run `framecast ...`; its stdout's JSON (the lines before `saved ...`)."""
    assert main(list(argv)) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.split("\nsaved ")[0])


def test_output_without_wait_is_refused_before_a_job_is_made(server, sdk, tmp_path, capsys):
    before = len(sdk.videos.list(limit=100).data)
    assert main(["videos", "create", "a red ball", "-o", str(tmp_path / "x.mp4"), "--url", server.url]) == 2
    assert "-o/--output needs --wait" in capsys.readouterr().err
    assert len(sdk.videos.list(limit=100).data) == before and not (tmp_path / "x.mp4").exists()


def test_extend_a_video_file(server, sdk, seconds, tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    made = cli_json(capsys, "videos", "create", "a white star", "--seconds", f"{seconds}", "--seed", "3", "--wait",
                    "-o", str(clip), "--url", server.url, "--json")
    longer = tmp_path / "longer.mp4"
    extended = cli_json(capsys, "videos", "extend", str(clip), "it spins", "--seconds", f"{seconds}", "--wait",
                        "-o", str(longer), "--url", server.url, "--json")
    assert extended["status"] == "completed" and extended["id"] != made["id"]
    assert extended["extends_video_id"] is None  # the file was uploaded, not the job named
    assert float(extended["seconds"]) == 2 * seconds and sdk.videos.retrieve(extended["id"]).prompt == "it spins"
    before, after = frames_of(clip.read_bytes()), frames_of(longer.read_bytes())
    assert len(after) == 2 * len(before)
    # the clip's frames open the new video: encoded a second time, a few levels off (other frames: ~26)
    assert np.abs(after[:len(before)].astype(int) - before).mean() < 10


def test_extend_needs_a_video_and_a_length(tmp_path, capsys):
    """Both are usage errors found before any request (the server here does not exist)."""
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["videos", "extend", str(tmp_path / "nope.mp4"), "go on", "--seconds", "1", "--url", url]) == 2
    assert main(["videos", "extend", "video_abc", "go on", "--url", url]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("framecast: error:") for e in errors)
    assert "is neither a video file nor a video id" in errors[0]
    assert "--seconds is needed (or --audio" in errors[1]


def test_list_pages_download_names_and_delete(server, sdk, seconds, tmp_path, capsys, monkeypatch):
    ids = [cli_json(capsys, "videos", "create", prompt, "--seconds", f"{seconds}", "--url", server.url, "--json")["id"]
           for prompt in ("first of two", "second of two")]
    for video_id in ids:
        assert sdk.videos.poll(video_id, poll_interval_ms=100).status == "completed"
    newest = [v.id for v in sdk.videos.list(limit=100).data]
    assert newest[:2] == ids[::-1]

    assert main(["videos", "list", "--limit", "1", "--url", server.url]) == 0
    out = capsys.readouterr().out
    assert ids[1] in out and ids[0] not in out and "second of two" in out and "100%" in out
    assert out.rstrip().endswith(f"more: framecast videos list --after {ids[1]}")
    assert main(["videos", "list", "--limit", "1", "--after", ids[1], "--url", server.url, "--json"]) == 0
    assert [v["id"] for v in json.loads(capsys.readouterr().out)] == [ids[0]]

    monkeypatch.chdir(tmp_path)
    assert main(["videos", "download", ids[0], "--url", server.url]) == 0
    assert main(["videos", "download", ids[0], "--variant", "spritesheet", "--url", server.url]) == 0
    assert capsys.readouterr().out.split() == ["saved", f"{ids[0]}.mp4", "saved", f"{ids[0]}.jpg"]
    assert (tmp_path / f"{ids[0]}.mp4").read_bytes() == sdk.videos.download_content(ids[0]).read()
    assert (tmp_path / f"{ids[0]}.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG

    assert main(["videos", "get", ids[0], "--url", server.url]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{ids[0]}  completed") and "100.0%" in line and line.endswith("first of two")
    assert main(["videos", "delete", ids[0], "--url", server.url]) == 0
    assert capsys.readouterr().out.strip() == f"deleted {ids[0]}"
    with pytest.raises(openai.NotFoundError):
        sdk.videos.retrieve(ids[0])
    assert main(["videos", "get", ids[0], "--url", server.url]) == 2
    assert "not_found" in capsys.readouterr().err
