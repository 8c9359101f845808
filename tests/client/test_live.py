"""Python client and CLI against a real `framecast serve --model tiny` on loopback."""

from __future__ import annotations

import asyncio
import io
import json

import numpy as np
import pytest
from PIL import Image

from client.cli import main
from client.errors import BadRequestError, NotFoundError, UnauthorizedError, UnsupportedError
from client.jobs import AsyncJobsClient, JobsClient
from client.realtime import AsyncRealtimeClient
from client.realtime_sync import RealtimeClient
from tests.server_harness import ffprobe_video, model_info, running_server

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("server")) as url:
        yield url


@pytest.fixture(scope="module")
def info(server):
    return model_info(server)


def test_stream_cli_writes_a_valid_mp4(server, info, tmp_path, capsys):
    out = tmp_path / "stream.mp4"
    seconds = 2 * info["chunk_frames"] / info["fps"]  # two chunks' worth, whatever the model
    code = main(["stream", "a red ball on a blue background", "--seconds", f"{seconds}", "-o", str(out),
                 "--url", server, "--seed", "3", "--switch", f"{seconds / 2}:a green square", "--cut", "--quiet"])
    assert code == 0, capsys.readouterr().err
    probe = ffprobe_video(out)
    assert probe["codec_name"] == "h264"
    assert probe["frames"] == round(seconds * info["fps"])
    assert (probe["width"], probe["height"]) == (info["width"] + info["width"] % 2, info["height"] + info["height"] % 2)


def test_sync_session_iterates_switches_and_stops(server, info):
    with RealtimeClient(server).connect("a red ball", seed=1) as session:
        assert (session.info.width, session.info.height) == (info["width"], info["height"])
        chunks, event_id = [], None
        for chunk in session:
            chunks.append(chunk)
            if chunk.index == 1:
                event_id = session.update("a blue square", transition_chunks=0)
            if event_id in session.applied or len(chunks) > 8:
                break
        reason = session.stop()
    assert reason == "stopped" or reason
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert all(c.first_frame_index == sum(len(p.frames) for p in chunks[: i]) for i, c in enumerate(chunks))
    first = chunks[0].frames
    assert first.dtype == np.uint8 and first.shape[1:] == (info["height"], info["width"], 3)
    assert first.std() > 1.0, "frames are blank"
    assert chunks[0].since_start_s > 0 and all(c.received_at > 0 for c in chunks)
    assert event_id in session.applied and session.applied[event_id] >= 2


def test_a_cut_is_applied_and_a_cut_with_a_blend_is_refused_while_the_stream_goes_on(server):
    with RealtimeClient(server).connect("a red ball", seed=2) as session:
        chunks, cut_id, bad_id = [], None, None
        for chunk in session:
            chunks.append(chunk)
            if chunk.index == 1:
                bad_id = session.update("a green square", transition_chunks=2, cut=True)
                cut_id = session.update("a blue square", cut=True)
            if cut_id in session.applied or len(chunks) > 8:
                break
        session.stop()
    assert cut_id in session.applied and bad_id not in session.applied
    assert any(isinstance(e, BadRequestError) and "cut" in str(e) for e in session.errors)
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_async_fmp4_pause_and_resume(server, info):
    async def scenario():
        client = AsyncRealtimeClient(server)
        async with client.connect("a yellow circle", seed=5, format="fmp4") as session:
            first = await session.next_chunk()
            assert first.format == "fmp4" and first.frames.shape[1:] == (info["height"], info["width"], 3)
            await session.pause()
            await asyncio.sleep(0.5)  # chunks in flight may still arrive
            while True:  # drain what was queued before the pause took effect
                try:
                    await asyncio.wait_for(session.next_chunk(), timeout=1.5)
                except TimeoutError:
                    break
            await session.resume()
            resumed = await asyncio.wait_for(session.next_chunk(), timeout=60)
            assert resumed.index > first.index
            assert resumed.frames.shape[1:] == first.frames.shape[1:]

    asyncio.run(scenario())


def test_start_from_an_image(server, info):
    picture = io.BytesIO()
    Image.new("RGB", (info["width"], info["height"]), (200, 30, 30)).save(picture, format="PNG")
    with RealtimeClient(server).connect("a red ball", image=picture.getvalue(), seed=2) as session:
        chunk = session.next_chunk()
    assert chunk is not None and chunk.frames.shape[1:] == (info["height"], info["width"], 3)


def test_session_errors_are_typed(server, info):
    with pytest.raises(UnsupportedError) as excinfo:
        RealtimeClient(server).connect("x", model="no-such-model")
    assert excinfo.value.code == "unsupported"
    broken = "data:image/png;base64," + "A" * 64
    with pytest.raises((BadRequestError, UnsupportedError)):
        RealtimeClient(server).connect("x", image=broken)
    with pytest.raises(NotFoundError) as not_found:
        JobsClient(server).get("video_does_not_exist")
    assert not_found.value.status == 404
    with pytest.raises(BadRequestError, match="seconds"):
        JobsClient(server).create("x", seconds=-1)


def test_jobs_round_trip(server, info, tmp_path):
    seconds = info["chunk_frames"] / info["fps"]
    seen = []
    with JobsClient(server) as jobs:
        video = jobs.create("a green square sliding", seconds=seconds, seed=7)
        assert video.status in ("queued", "in_progress")
        done = jobs.wait(video.id, poll_interval=0.2, timeout=240, on_progress=lambda v: seen.append(v.status))
        assert done.status == "completed" and done.progress == 100 and seen[-1] == "completed"
        path = jobs.download(video.id, tmp_path / "job.mp4")
        assert ffprobe_video(path)["frames"] == round(seconds * info["fps"])
        other = jobs.create("a purple triangle", seconds=seconds, seed=8)
        page = jobs.list(limit=1)
        assert len(page.data) == 1 and page.has_more
        rest = jobs.list(limit=100, after=page.last_id)
        ids = {v.id for v in page.data + rest.data}
        assert {video.id, other.id} <= ids
        assert jobs.delete(other.id) is None  # OpenAI's delete object, not a video
        with pytest.raises(NotFoundError):
            jobs.get(other.id)
        longer = jobs.wait(jobs.extend("now it spins", seconds, clip=path).id, poll_interval=0.2, timeout=240)
        assert longer.seconds == 2 * seconds
        assert ffprobe_video(jobs.download(longer.id, tmp_path / "longer.mp4"))["frames"] == 2 * round(seconds * info["fps"])

    async def async_get():
        async with AsyncJobsClient(server) as ajobs:
            return await ajobs.get(video.id), await ajobs.content(video.id)

    again, content = asyncio.run(async_get())
    assert again.id == video.id and content == path.read_bytes()


def test_videos_cli(server, info, tmp_path, capsys):
    seconds = info["chunk_frames"] / info["fps"]
    out = tmp_path / "cli.mp4"
    assert main(["videos", "create", "a white star", "--seconds", f"{seconds}", "--wait", "-o", str(out),
                 "--url", server, "--json"]) == 0
    created = json.loads(capsys.readouterr().out.strip())
    assert created["status"] == "completed" and out.stat().st_size > 0
    assert main(["videos", "get", created["id"], "--url", server]) == 0
    assert created["id"] in capsys.readouterr().out
    assert main(["videos", "list", "--limit", "5", "--url", server]) == 0
    assert created["id"] in capsys.readouterr().out
    assert main(["videos", "download", created["id"], "-o", str(tmp_path / "again.mp4"), "--url", server]) == 0
    assert (tmp_path / "again.mp4").read_bytes() == out.read_bytes()
    assert main(["videos", "download", created["id"], "--variant", "thumbnail", "-o", str(tmp_path / "t.webp"),
                 "--url", server]) == 0
    assert (tmp_path / "t.webp").read_bytes()[8:12] == b"WEBP"
    capsys.readouterr()
    assert main(["videos", "remix", created["id"], "a black star", "--url", server, "--json"]) == 0
    remix = json.loads(capsys.readouterr().out.strip())
    assert remix["remixed_from_video_id"] == created["id"] and remix["seed"] == created["seed"]
    assert main(["videos", "extend", created["id"], "it fades", "--seconds", f"{seconds}", "--wait",
                 "-o", str(tmp_path / "ext.mp4"), "--url", server, "--json"]) == 0
    extended = json.loads(capsys.readouterr().out.strip().split("\nsaved")[0])
    assert extended["status"] == "completed" and float(extended["seconds"]) == 2 * seconds
    assert ffprobe_video(tmp_path / "ext.mp4")["frames"] == 2 * round(seconds * info["fps"])
    assert main(["videos", "get", "video_nope", "--url", server]) == 2
    assert "not_found" in capsys.readouterr().err


@pytest.mark.slow  # starts a second server (with API keys)
def test_api_key_auth(tmp_path):
    with running_server(tmp_path / "keyed", api_keys="secret-key") as url:
        with pytest.raises(UnauthorizedError):
            JobsClient(url).list()
        with pytest.raises(UnauthorizedError):
            RealtimeClient(url).connect("x")
        assert isinstance(JobsClient(url, api_key="secret-key").list().data, list)
        with RealtimeClient(url, api_key="secret-key").connect("a red ball") as session:
            chunk = session.next_chunk()
            assert chunk is not None and chunk.frames.size > 0
