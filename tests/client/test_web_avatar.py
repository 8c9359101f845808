"""The studio page's Avatar tab in Debian's headless Chromium, with a fake microphone fed from a WAV
(a 300 Hz tone, half a second on, half a second off), against an in-process server running the
real audio model path (`tiny-avatar`, random weights).

The page captures the microphone through its AudioWorklet, sends PCM input messages stamped by
media time, and plays the fMP4 avatar stream (H.264 + the AAC track of the audio the model heard)
through MediaSource. The test reads the socket's frames both ways: the tone the page sent sits at
the same media times in the audio track the page was sent back, and the browser decodes and plays
both tracks.
"""

from __future__ import annotations

import io
import shutil
import struct
import wave

import av
import numpy as np
import pytest
from PIL import Image

from tests.client.test_web_page import CHROMIUM, CHROMIUM_FLAGS
from tests.server.test_avatar_serving import placed_audio
from tests.server_harness import start_server, tiny_avatar_generator

RATE = 48000
BEEP_S = 0.5  # the fake microphone: BEEP_S of tone, BEEP_S of silence, looped by Chromium


def beeps_wav(path, seconds: float = 4.0) -> None:
    t = np.arange(round(seconds * RATE)) / RATE
    on = (t % (2 * BEEP_S)) < BEEP_S
    samples = (np.sin(2 * np.pi * 300 * t) * 16000 * on).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
        w.writeframes(samples.tobytes())


def onsets(samples: np.ndarray, rate: int, threshold: float = 0.15) -> np.ndarray:
    """Times (s) where the signal turns loud after at least 0.2 s of quiet."""
    loud = np.abs(samples.astype(np.float32)) / 32768 > threshold
    idx = np.nonzero(loud)[0]
    if not len(idx):
        return np.zeros(0)
    starts = idx[np.concatenate([[True], np.diff(idx) > 0.2 * rate])]
    return starts / rate


@pytest.fixture(scope="module")
def avatar_page(tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not shutil.which(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    tmp = tmp_path_factory.mktemp("web-avatar")
    mic = tmp / "mic.wav"
    beeps_wav(mic)
    flags = CHROMIUM_FLAGS + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                              f"--use-file-for-fake-audio-capture={mic}", "--autoplay-policy=no-user-gesture-required"]
    with start_server(tmp / "data", generator=tiny_avatar_generator()) as server, sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(str(tmp / "profile"), executable_path=CHROMIUM, headless=True,
                                                        args=flags, viewport={"width": 1280, "height": 800})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        frames = {"sent": [], "received": []}

        def on_socket(ws):
            ws.on("framesent", lambda payload: frames["sent"].append(payload))
            ws.on("framereceived", lambda payload: frames["received"].append(payload))

        page.on("websocket", on_socket)
        page.goto(server.url + "/")
        yield page, errors, frames, tmp
        context.close()


def avatar(page, key):
    return page.evaluate(f"() => window.framecastAvatar.{key}")


def loud(samples: np.ndarray, rate: int, frame_s: float = 0.01, threshold: float = 0.15) -> np.ndarray:
    """Per 10 ms of media time: whether the audio is loud there."""
    n = round(frame_s * rate)
    frames = np.abs(samples[: len(samples) // n * n].astype(np.float32)).reshape(-1, n).max(axis=1) / 32768
    return frames > threshold


def sent_audio(page, frames) -> tuple[np.ndarray, int]:
    """(the PCM the page sent (FCI1 messages) placed by their media time, the rate it declared: its
    AudioContext's, not necessarily the WAV's)."""
    rate = avatar(page, "audioRate")
    sent = [f for f in frames["sent"] if isinstance(f, bytes) and f[:4] == b"FCI1"]
    assert len(sent) >= 50
    end = max(struct.unpack_from("<Q", f, 8)[0] * rate // 1_000_000 + (len(f) - 20) // 2 for f in sent)
    out = np.zeros(end, np.int16)
    for f in sent:
        start = struct.unpack_from("<Q", f, 8)[0] * rate // 1_000_000
        out[start:start + (len(f) - 20) // 2] = np.frombuffer(f[20:], "<i2")
    return out, rate


def received_audio(frames) -> tuple[np.ndarray, int]:
    """(the audio track of the fMP4 fragments the page was sent, its rate)."""
    stream = b"".join(f[20:] for f in frames["received"] if isinstance(f, bytes) and f[:4] == b"FCS1")
    return placed_audio(stream)


def assert_same_timeline(page, frames) -> None:
    """Wherever the audio that came back is loud, the audio the page sent is loud at the same media
    time (10 ms resolution). Sent audio may be missing from what came back (it arrived after its
    chunk was made: silence), never shifted."""
    (sent, rate), (back, back_rate) = sent_audio(page, frames), received_audio(frames)
    assert back_rate == rate
    sent_loud, back_loud = loud(sent, rate), loud(back, rate)
    n = min(len(sent_loud), len(back_loud))
    assert back_loud[:n].sum() >= 50, "the video's audio track has (almost) no beeps"  # >= 0.5 s of tone
    assert (sent_loud[:n] & back_loud[:n]).sum() >= 0.95 * back_loud[:n].sum()


def test_avatar_tab_talks_through_the_microphone_in_sync(avatar_page):
    page, errors, frames, tmp = avatar_page
    frames["sent"].clear(), frames["received"].clear()
    assert avatar(page, "mseSupported"), "this chromium cannot play H.264 + AAC through MediaSource"
    page.click("#tab-avatar")
    face = tmp / "face.png"
    Image.new("RGB", (64, 64), (210, 160, 130)).save(face)
    page.set_input_files("#avatar-face", str(face))
    page.wait_for_function("() => window.framecastAvatar.faceDataUrl !== null")
    page.click("#avatar-mic")
    page.wait_for_function("() => window.framecastAvatar.status === 'streaming'", timeout=60_000)
    page.wait_for_function("() => window.framecastAvatar.chunksReceived >= 6 && window.framecastAvatar.audioSentS >= 3",
                           timeout=600_000)
    played = page.evaluate("""() => { const v = document.getElementById('avatar-video');
        return {t: v.currentTime, audio: v.webkitAudioDecodedByteCount, video: v.webkitVideoDecodedByteCount,
                paused: v.paused, error: v.error && v.error.message}; }""")
    assert played["error"] is None and not played["paused"], played
    assert played["t"] > 0.5 and played["audio"] > 0 and played["video"] > 0, played  # both tracks decoded, playing
    page.click("#avatar-stop")
    page.wait_for_function("() => window.framecastAvatar.status === 'done'", timeout=30_000)
    assert not errors and not avatar(page, "errors")

    # what the page sent (PCM input messages stamped by media time) and what came back (fMP4
    # fragments with the audio the model heard under the frames)
    # every beep the video carries sits where the page said it did (the audio track is in sync with
    # the frames by construction: both on the fragments' media times)
    assert_same_timeline(page, frames)


def test_avatar_tab_speaks_a_dropped_file(avatar_page):
    """A dropped audio file is sent from session.started, stamped from media time 0 (its first sample), so
    its beeps are sent (and come back) at 0, 1, 2 s; and ahead of the stream's clock (all of a 3-s file
    before the first chunk arrives). The server may still make its first chunk before that audio reaches it
    (then it is silence: the stream never waits), so the test waits for 10 chunks (5 s), past the whole file:
    the later beeps come back even on a loaded machine."""
    page, errors, frames, tmp = avatar_page
    frames["sent"].clear(), frames["received"].clear()
    page.click("#tab-avatar")
    speech = tmp / "speech.wav"
    beeps_wav(speech, seconds=3.0)
    page.set_input_files("#avatar-file", str(speech))
    page.wait_for_function("() => window.framecastAvatar.source === 'file' && "
                           "window.framecastAvatar.chunksReceived >= 10 && window.framecastAvatar.audioSentS >= 2.5",
                           timeout=600_000)
    assert avatar(page, "audioSentAtFirstChunk") >= 2.9  # the whole file, before the first chunk came back
    page.click("#avatar-stop")
    page.wait_for_function("() => window.framecastAvatar.status === 'done'", timeout=30_000)
    assert not errors and not avatar(page, "errors")
    sent, rate = sent_audio(page, frames)
    np.testing.assert_allclose(onsets(sent, rate)[:3], [0.0, 1.0, 2.0], atol=1 / 16)  # the file's second s at media time s
    assert_same_timeline(page, frames)
