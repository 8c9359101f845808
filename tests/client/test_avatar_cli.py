"""`framecast avatar` (client/avatar_cli.py) against an in-process `tiny-avatar` server (random weights,
the real audio path), cross-checked with the official `openai` SDK and by decoding the MP4s with PyAV:
the options tests/server/test_avatar_serving.py leaves at their defaults (--seconds, --seed, --prompt,
--model, --json), and the README's next step, `framecast videos extend VIDEO_ID ... --audio more.wav`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from client.cli import main
from tests.server.test_avatar_job_continue import loud_spans, tone
from tests.client.test_videos_cli import frames_of
from tests.server.test_avatar_serving import decode_av, face_png, wav_bytes
from tests.server_harness import sdk_client, start_server, tiny_avatar_generator

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks its video methods deprecated


@pytest.fixture(scope="module")
def gen():
    return tiny_avatar_generator()


@pytest.fixture(scope="module")
def server(gen, tmp_path_factory):
    with start_server(tmp_path_factory.mktemp("avatar-cli"), generator=gen, max_running_jobs=1) as srv:
        yield srv


@pytest.fixture(scope="module")
def sdk(server):
    with sdk_client(server.url) as client:
        yield client


@pytest.fixture
def files(tmp_path):
    """(face.png, speech.wav): 1 s of speech, loud from 0.5 to 0.9 s."""
    (tmp_path / "face.png").write_bytes(face_png())
    (tmp_path / "speech.wav").write_bytes(wav_bytes(tone(1.0, 0.5, 0.9)))
    return tmp_path / "face.png", tmp_path / "speech.wav"


def test_options_reach_the_job_and_its_mp4(gen, server, sdk, files, tmp_path, capsys):
    face, speech = files
    out = tmp_path / "talk.mp4"
    assert main(["avatar", "--image", str(face), "--audio", str(speech), "-o", str(out), "--seconds", "0.75",
                 "--seed", "5", "--prompt", "a face that talks", "--model", gen.info.name, "--url", server.url,
                 "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)  # --json: the server's object only, no "saved" line
    assert shown["status"] == "completed" and sdk.videos.retrieve(shown["id"]).status == "completed"
    assert (float(shown["seconds"]), shown["seed"], shown["prompt"]) == (0.75, 5, "a face that talks")
    fps = gen.info.fps
    frames, audio, rate = decode_av(out.read_bytes())
    assert frames == round(0.75 * fps) and len(audio) / rate == pytest.approx(0.75, abs=1 / fps)
    [(on, off)] = loud_spans(audio, rate)  # the speech's own timing, cut at the video's end
    assert on == pytest.approx(0.5, abs=1 / fps) and off == pytest.approx(0.75, abs=1 / fps)
    # the same request made by the official SDK (its multipart POST) renders the same frames
    same = sdk.post("/videos", cast_to=openai.types.Video,
                    body={"prompt": "a face that talks", "seconds": "0.75", "seed": "5", "model": gen.info.name},
                    files=[("audio", ("speech.wav", speech.read_bytes(), "audio/wav")),
                           ("input_reference", ("face.png", face.read_bytes(), "image/png"))],
                    options={"headers": {"Content-Type": "multipart/form-data"}})
    assert sdk.videos.poll(same.id, poll_interval_ms=100).status == "completed"
    theirs = frames_of(sdk.videos.download_content(same.id).read())
    assert np.abs(frames_of(out.read_bytes()).astype(int) - theirs).mean() < 1  # within a level (docs/API.md)


def test_a_model_other_than_the_served_one_is_refused(gen, server, sdk, files, tmp_path, capsys):
    face, speech = files
    before = len(sdk.videos.list(limit=100).data)
    assert main(["avatar", "--image", str(face), "--audio", str(speech), "-o", str(tmp_path / "x.mp4"),
                 "--model", "not-the-served-model", "--url", server.url]) == 2
    err = capsys.readouterr().err.strip()
    assert f"serves {gen.info.name!r}" in err
    assert err.startswith("framecast: error:") and "'model'" in err and "\n" not in err
    assert len(sdk.videos.list(limit=100).data) == before and not (tmp_path / "x.mp4").exists()


def test_its_next_words_through_videos_extend(gen, server, sdk, files, tmp_path, capsys):
    face, speech = files
    first = tmp_path / "talk.mp4"
    assert main(["avatar", "--image", str(face), "--audio", str(speech), "-o", str(first), "--url", server.url]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith(f"saved {first}")
    video_id = out.split()[0]
    (tmp_path / "more.wav").write_bytes(wav_bytes(tone(0.5, 0.1, 0.3)))
    longer = tmp_path / "longer.mp4"
    assert main(["videos", "extend", video_id, "it goes on", "--audio", str(tmp_path / "more.wav"), "--wait",
                 "-o", str(longer), "--url", server.url, "--json"]) == 0
    extended = json.loads(capsys.readouterr().out.split("\nsaved ")[0])
    assert extended["extends_video_id"] == video_id and extended["status"] == "completed"
    fps = gen.info.fps
    frames, audio, rate = decode_av(longer.read_bytes())
    total = float(extended["seconds"])
    assert frames == round(total * fps) and total >= 1.0 + 0.5  # the source, then all of the new audio
    # the source's speech where it was; the new words start at the join and end the video
    join = total - 0.5
    [(on1, off1), (on2, off2)] = loud_spans(audio, rate)
    assert on1 == pytest.approx(0.5, abs=1 / fps) and off1 == pytest.approx(0.9, abs=1 / fps)
    assert on2 == pytest.approx(join + 0.1, abs=1 / fps) and off2 == pytest.approx(join + 0.3, abs=1 / fps)
