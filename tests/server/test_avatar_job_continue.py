"""Audio jobs carried through extensions and remixes, driven by the official `openai` SDK, on the
real audio model path (`tiny-avatar`). The MP4s are decoded with PyAV and their audio placed by
its own timestamps, so a track shifted against the video (by 0.1 s: over one 1/16 s frame) fails."""

from __future__ import annotations

import numpy as np
import pytest

from client.jobs import JobsClient
from tests.server.test_avatar_serving import RATE, Spy, decode_av, face_png, wav_bytes
from tests.server_harness import sdk_client, start_server, tiny_avatar_generator

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK's client.post with files


def tone(seconds: float, on: float, off: float, rate: int = RATE) -> np.ndarray:
    """int16 mono: silence with a loud 300 Hz tone from `on` to `off` s."""
    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 300 * t) * 20000 * ((t >= on) & (t < off))).astype(np.int16)


def loud_spans(samples: np.ndarray, rate: int, threshold: float = 0.3, gap_s: float = 0.1) -> list[tuple[float, float]]:
    """[(first, last)] times in s of the runs where |sample| exceeds `threshold` of full scale
    (runs closer than `gap_s` are one)."""
    loud = np.nonzero(np.abs(samples.astype(np.float32) / 32768) > threshold)[0] / rate
    if not len(loud):
        return []
    cuts = np.nonzero(np.diff(loud) > gap_s)[0]
    return [(loud[a], loud[b]) for a, b in zip([0, *(cuts + 1)], [*cuts, len(loud) - 1])]


def assert_spans(got, want, tol):
    assert len(got) == len(want), (got, want)
    for (on, off), (w_on, w_off) in zip(got, want):
        assert on == pytest.approx(w_on, abs=tol) and off == pytest.approx(w_off, abs=tol), (got, want)


@pytest.fixture(scope="module")
def gen():
    return tiny_avatar_generator()


@pytest.fixture(scope="module")
def sdk(gen, tmp_path_factory):
    with start_server(tmp_path_factory.mktemp("avatar-jobs"), generator=gen, max_running_jobs=1) as srv:
        with sdk_client(srv.url, timeout=300) as client:
            yield client


def post(sdk, path: str, body: dict, files: list) -> "openai.types.Video":
    """The SDK's own multipart POST (its video methods have no audio argument)."""
    video = sdk.post(path, cast_to=openai.types.Video, body=body, files=files,
                     options={"headers": {"Content-Type": "multipart/form-data"}})
    return video


def finished(sdk, video, tmp_path) -> bytes:
    video = sdk.videos.poll(video.id, poll_interval_ms=200)
    assert video.status == "completed", video.error
    path = tmp_path / f"{video.id}.mp4"
    sdk.videos.download_content(video.id).write_to_file(path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def source(sdk):
    """A 1 s avatar job whose audio has a tone at 0.25-0.5 s."""
    video = post(sdk, "/videos", {"prompt": "a face speaking"},
                 [("audio", ("speech.wav", wav_bytes(tone(1.0, 0.25, 0.5)), "audio/wav")),
                  ("input_reference", ("face.png", face_png(), "image/png"))])
    video = sdk.videos.poll(video.id, poll_interval_ms=200)
    assert video.status == "completed", video.error
    return video


def test_extension_with_new_audio_carries_the_source_audio_then_the_new(gen, sdk, source, tmp_path):
    """The source's stream made frames past its 1 s (the rest of its chunks, heard with the source's
    silence): the extension opens with them, so the new audio starts after them, where the frames
    made hearing it start, and `seconds` (the default: the audio's length) makes room for all of it."""
    fps = gen.info.fps
    with Spy(gen) as spy:
        video = post(sdk, "/videos/extensions", {"prompt": "the face goes on", "video": {"id": source.id}},
                     [("audio", ("more.wav", wav_bytes(tone(1.0, 0.3, 0.6)), "audio/wav"))])
        tail_s = float(video.seconds) - 2.0  # the source's 1 s + the tail + the new audio's length
        # (up to the chunks its runner had buffered when the video was full)
        assert 0 < tail_s <= 3 * gen.info.chunk_video_frames / fps and (tail_s * fps) == pytest.approx(round(tail_s * fps))
        data = finished(sdk, video, tmp_path)
    join = 1.0 + tail_s
    frames, audio, rate = decode_av(data)
    assert frames == round((2.0 + tail_s) * fps) and len(audio) / rate == pytest.approx(2.0 + tail_s, abs=1 / fps)
    # on the media timeline: the source's tone where it was, silence under the tail, the new tone from the join on
    assert_spans(loud_spans(audio, rate), [(0.25, 0.5), (join + 0.3, join + 0.6)], tol=1 / fps)
    # the continued model was fed from the join on (it heard the audio before it in the source job,
    # its ResumeState carries that), the new audio at its media time
    model_rate = gen.info.audio_sample_rate
    assert min(p.media_time_us for p in spy.pieces) == round(join * 1_000_000)
    assert_spans(loud_spans(spy.heard(), model_rate), [(join + 0.3, join + 0.6)], tol=0.01)


def test_extension_without_audio_goes_on_in_silence_and_extends_again(gen, sdk, source, tmp_path):
    fps = gen.info.fps
    first = sdk.post("/videos/extensions", cast_to=openai.types.Video,
                     body={"prompt": "listening", "video": {"id": source.id}, "seconds": 0.5})
    finished(sdk, first, tmp_path)
    with Spy(gen) as spy, JobsClient(str(sdk.base_url).removesuffix("/v1/")) as jobs:
        # an extension of the extension with audio of its own, through framecast's own client
        video = jobs.extend("speaking again", None, video_id=first.id, audio=wav_bytes(tone(0.5, 0.1, 0.3)))
        tail_s = video.seconds - 2.0  # 1.5 s of source (with its tail: silence), its stream's tail, 0.5 s new
        assert 0 < tail_s <= 3 * gen.info.chunk_video_frames / fps
        data = finished(sdk, video, tmp_path)
    join = 1.5 + tail_s
    frames, audio, rate = decode_av(data)
    assert frames == round((2.0 + tail_s) * fps) and len(audio) / rate == pytest.approx(2.0 + tail_s, abs=1 / fps)
    assert_spans(loud_spans(audio, rate), [(0.25, 0.5), (join + 0.1, join + 0.3)], tol=1 / fps)  # silence 1.0 s to the join
    assert_spans(loud_spans(spy.heard(), gen.info.audio_sample_rate), [(join + 0.1, join + 0.3)], tol=0.01)


def test_remix_reuses_the_audio_or_takes_a_new_one(gen, sdk, source, tmp_path):
    fps = gen.info.fps
    same = sdk.videos.remix(source.id, prompt="another face")  # the SDK's JSON remix
    assert float(same.seconds) == pytest.approx(1.0)
    frames, audio, rate = decode_av(finished(sdk, same, tmp_path))
    assert frames == fps
    assert_spans(loud_spans(audio, rate), [(0.25, 0.5)], tol=1 / fps)
    sdk.videos.delete(source.id)  # the remix keeps its own copy of the audio
    sdk.videos.delete(same.id)
    with pytest.raises(openai.NotFoundError):
        sdk.videos.remix(source.id, prompt="gone")


def test_remix_with_a_new_audio(gen, sdk, tmp_path):
    """Through `framecast videos remix --audio` (framecast's client sends it multipart)."""
    from client.cli import main

    fps = gen.info.fps
    original = post(sdk, "/videos", {"prompt": "a face"},
                    [("audio", ("a.wav", wav_bytes(tone(0.5, 0.1, 0.2)), "audio/wav"))])
    finished(sdk, original, tmp_path)
    (tmp_path / "b.wav").write_bytes(wav_bytes(tone(0.75, 0.3, 0.6)))
    out = tmp_path / "remix.mp4"
    assert main(["videos", "remix", original.id, "the same face, other words", "--audio", str(tmp_path / "b.wav"),
                 "--wait", "-o", str(out), "--url", str(sdk.base_url).removesuffix("/v1/")]) == 0
    remix = sdk.videos.list(limit=1).data[0]
    assert float(remix.seconds) == pytest.approx(0.75) and remix.remixed_from_video_id == original.id
    frames, audio, rate = decode_av(out.read_bytes())
    assert frames == round(0.75 * fps)
    assert_spans(loud_spans(audio, rate), [(0.3, 0.6)], tol=1 / fps)
