"""The browser studio page in Debian's headless Chromium (Playwright, no browser download).

Against a real `framecast serve --model tiny`: stream on the canvas, switch prompts live, record,
stop, start from an uploaded image, show a server error, and run a job in the Jobs tab. Takes a
screenshot of the running page; to refresh the README's one:
`FRAMECAST_TEST_MODEL=shapes FRAMECAST_SCREENSHOT=docs/screenshot.png pytest tests/client/test_web_page.py`.

Needs: `apt-get install -y chromium` and `pip install playwright`.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.server_harness import running_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
# where the screenshot of the running page goes: docs/screenshot.png when asked for, else a temp dir
SCREENSHOT_ENV = "FRAMECAST_SCREENSHOT"

# mean and spread of the canvas pixels plus a cheap fingerprint, to see frames change
CANVAS_SAMPLE_JS = """() => {
  const c = document.getElementById('screen');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let sum = 0, sq = 0, hash = 0;
  for (let i = 0; i < d.length; i += 4) {
    const v = (d[i] + d[i + 1] + d[i + 2]) / 3;
    sum += v; sq += v * v; hash = (hash * 31 + d[i] + 7 * d[i + 1] + 13 * d[i + 2]) % 1000000007;
  }
  const n = d.length / 4, mean = sum / n;
  return {mean, std: Math.sqrt(Math.max(sq / n - mean * mean, 0)), hash};
}"""


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not shutil.which(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    with running_server(tmp_path_factory.mktemp("web-server")) as url, sync_api.sync_playwright() as pw:
        profile = tmp_path_factory.mktemp("chromium-profile")
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 800}, accept_downloads=True,
        )
        page = context.new_page()
        page_errors: list[str] = []
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))
        page.goto(url + "/")
        yield page, page_errors
        context.close()


def state(page, key):
    return page.evaluate(f"() => window.framecast.{key}")


def test_live_stream_switch_record_stop(browser_page, tmp_path):
    page, page_errors = browser_page
    page.wait_for_function("() => window.framecast.model !== null", timeout=30_000)
    page.fill("#prompt", "a red ball bouncing on a blue background")
    page.fill("#seed", "4")
    page.click("#start")
    started_at = time.monotonic()
    page.wait_for_function("() => window.framecast.framesDrawn >= 6", timeout=120_000)
    first = page.evaluate(CANVAS_SAMPLE_JS)
    assert first["std"] > 1.0, f"canvas looks blank: {first}"
    drawn = state(page, "framesDrawn")
    page.wait_for_function(f"() => window.framecast.framesDrawn >= {drawn + 6}", timeout=120_000)
    second = page.evaluate(CANVAS_SAMPLE_JS)
    assert second["hash"] != first["hash"], "canvas did not change between frames"
    session = state(page, "session")
    assert page.evaluate("() => [document.getElementById('screen').width, document.getElementById('screen').height]") == [
        session["width"], session["height"]]

    page.fill("#prompt", "a green square sliding on a black background")
    page.click("#switch")
    page.wait_for_function(
        "() => window.framecast.updatesSent.length === 1 && "
        "window.framecast.lastAppliedEventId === window.framecast.updatesSent[0]", timeout=120_000)
    assert "applied" in page.inner_text("#switch-status")
    assert page.get_attribute("body", "data-last-applied") == state(page, "updatesSent")[0]
    # a scene cut: "smooth transition" stays ticked, the cut wins (a cut with a blend is a bad_request)
    page.check("#cut")
    page.fill("#prompt", "a yellow triangle on a white background")
    page.click("#switch")
    assert "Cutting" in page.inner_text("#switch-status")
    page.wait_for_function(
        "() => window.framecast.updatesSent.length === 2 && "
        "window.framecast.lastAppliedEventId === window.framecast.updatesSent[1]", timeout=120_000)
    assert state(page, "errors") == []
    page.uncheck("#cut")
    # the overlay's "last switch": update sent -> first frame of the new prompt drawn (frame index
    # from session.update.applied's media_time_s); "lead": frames received but not yet drawn
    page.wait_for_function("() => window.framecast.lastSwitchS !== null", timeout=120_000)
    assert 0 < state(page, "lastSwitchS") < 120 and page.inner_text("#m-switch").endswith(" s")
    assert page.inner_text("#m-lead").endswith(" s") and state(page, "leadS") >= 0
    # the server paces the stream: what arrived is about what a real-time player could have shown
    # (a starved headless page may draw less, so its drawn/dropped counts are not the measure)
    received_s = state(page, "framesReceived") / session["fps"]
    assert received_s <= time.monotonic() - started_at + session["max_lead_s"] + 1.5, received_s

    page.wait_for_function("() => window.framecast.stats !== null", timeout=30_000)
    assert page.inner_text("#m-ttff").endswith("s")
    screenshot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "screenshot.png")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    page.click("#record")
    drawn = state(page, "framesDrawn")
    page.wait_for_function(f"() => window.framecast.framesDrawn >= {drawn + 6}", timeout=120_000)
    with page.expect_download(timeout=30_000) as download:
        page.click("#record")
    assert download.value.suggested_filename.startswith("framecast-")
    page.wait_for_function("() => window.framecast.lastRecordingBytes > 0", timeout=30_000)

    page.click("#stop")
    page.wait_for_function("() => window.framecast.status === 'done'", timeout=30_000)
    assert state(page, "errors") == [] and page_errors == []


def test_start_from_uploaded_image(browser_page, tmp_path):
    page, page_errors = browser_page
    picture = tmp_path / "start.png"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (230, 40, 40)).save(buffer, format="PNG")
    picture.write_bytes(buffer.getvalue())
    page.set_input_files("#image", str(picture))
    page.wait_for_function("() => (window.framecast.imageDataUrl || '').startsWith('data:image/png')")
    page.click("#start")
    page.wait_for_function("() => window.framecast.status === 'streaming' && window.framecast.framesDrawn >= 3",
                           timeout=120_000)
    page.click("#stop")
    page.wait_for_function("() => window.framecast.status === 'done'", timeout=30_000)
    page.click("#image-clear")
    assert state(page, "imageDataUrl") is None and page_errors == []


def test_server_error_is_shown(browser_page):
    page, _ = browser_page
    page.fill("#seed", "99999999999999999999999")  # over the protocol's seed limit
    page.click("#start")
    page.wait_for_selector("#error-banner:not(.hidden)", timeout=30_000)
    assert page.get_attribute("#error-banner", "data-code") == "bad_request"
    assert "seed" in page.inner_text("#error-text")
    page.wait_for_function("() => window.framecast.status === 'error'", timeout=30_000)
    assert page.is_visible("#reconnect")
    page.fill("#seed", "")
    page.click("#error-close")


def test_jobs_tab_submit_play_download(browser_page):
    page, page_errors = browser_page
    page.click("#tab-jobs")
    model = state(page, "model")
    page.fill("#job-prompt", "a white star drifting")
    page.fill("#job-seconds", str(model["chunk_frames"] / model["fps"]))
    page.click("#job-submit")
    page.wait_for_selector(".job[data-status='completed']", timeout=240_000)
    page.click(".job[data-status='completed'] [data-action='play']")
    page.wait_for_function(
        "() => window.framecast.playedJobId && document.getElementById('player-video').readyState >= 2",
        timeout=30_000)
    with page.expect_download(timeout=30_000) as download:
        page.click(".job[data-status='completed'] [data-action='download']")
    path = Path(download.value.path())
    assert download.value.suggested_filename.endswith(".mp4") and path.read_bytes()[4:8] == b"ftyp"
    assert page_errors == []
