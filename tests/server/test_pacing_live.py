"""Real-time pacing against a real server (uvicorn, WebSockets, encoders, engine) whose generator
takes a fixed 50 ms per step for 0.5 s chunks: ten times faster than real time, however loaded
the machine (tests/server/clocked_generator.py). Each client plays its stream on a real-time
`PlaybackClock`, as a viewer would. The bounds are generous: a pacer that never waits would put
~10 s of video per second of play in the client's hands."""

import asyncio
import io
import json
import time

import numpy as np
import pytest
from PIL import Image

from client.protocol.chunks import parse_chunk
from server.pacing import PlaybackClock
from tests.server.clocked_generator import CHUNK_FRAMES, FPS, ClockedGenerator, prompt_colour
from tests.server_harness import connect, http, send, start_server

MAX_LEAD_S = 1.0  # the server's FRAMECAST_MAX_LEAD_S in these tests
SLACK_S = 0.75  # scheduling noise of a loaded CI machine allowed on top of a bound
SETTLE_S = 2.0  # leads are checked after this much play


@pytest.fixture(scope="module")
def fast_server(tmp_path_factory):
    with start_server(tmp_path_factory.mktemp("pacing"), generator=ClockedGenerator(step_s=0.05),
                      max_lead_s=MAX_LEAD_S, lead_margin_s=0.25, stats_interval_s=0.5) as srv:
        yield srv


class Viewer:
    """A client that reads everything and plays it on a real-time clock."""

    def __init__(self, ws):
        self.ws = ws
        self.clock: PlaybackClock | None = None
        self.first_at: float | None = None
        self.chunks = []  # (arrival, ParsedChunk)
        self.leads: list[tuple[float, float]] = []  # (s of play, lead after a chunk)
        self.events: list[dict] = []

    async def start(self, **fields):
        await send(self.ws, {"type": "session.start", "prompt": "a red ball", "seed": 1, **fields})
        return await self.until(lambda e: e["type"] == "session.started")

    async def until(self, predicate, timeout: float = 30.0) -> dict:
        """Read (chunks and events) until an event matches."""
        seen = len(self.events)
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events[seen:]:
                if predicate(event):
                    return event
            seen = len(self.events)
            await self.read(deadline - time.monotonic())

    async def play(self, seconds: float) -> None:
        """Read for `seconds` of wall time."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                await self.read(deadline - time.monotonic())
            except asyncio.TimeoutError:
                return

    async def read(self, timeout: float) -> None:
        message = await asyncio.wait_for(self.ws.recv(), max(timeout, 0.001))
        now = time.monotonic()
        if isinstance(message, bytes):
            chunk = parse_chunk(message)
            self.first_at = self.first_at or now
            self.chunks.append((now, chunk))
            self.clock.deliver(chunk.frame_count, now)
            self.leads.append((now - self.first_at, self.clock.lead(now)))
            return
        event = json.loads(message)
        if event["type"] == "session.started":
            self.clock = PlaybackClock(event["fps"])
        assert event["type"] != "error", event
        self.events.append(event)

    def max_lead(self, after: float = SETTLE_S) -> float:
        return max(lead for t, lead in self.leads if t >= after)

    def colour_of(self, chunk_index: int) -> tuple[int, int, int]:
        chunk = next(c for _, c in self.chunks if c.chunk_index == chunk_index)
        frame = np.asarray(Image.open(io.BytesIO(chunk.jpeg_frames()[0])).convert("RGB"))
        return tuple(int(v) for v in frame.reshape(-1, 3).mean(axis=0))


def close_to(colour, expected, tol=12) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(colour, expected))


def test_one_fast_session_stays_within_the_lead_bound(fast_server):
    async def scenario():
        async with connect(fast_server.ws_url) as ws:
            viewer = Viewer(ws)
            started = await viewer.start()
            await viewer.play(7.0)
            stats = [e for e in viewer.events if e["type"] == "stats"]
            _, during = await asyncio.to_thread(http, "GET", fast_server.url + "/metrics")
            await send(ws, {"type": "session.stop"})
            await viewer.until(lambda e: e["type"] == "session.done")
            return viewer, started, stats, during.decode()

    viewer, started, stats, metrics = asyncio.run(scenario())
    series = f'framecast_session_lead_seconds{{session="{started["session_id"]}"}}'
    assert series in metrics
    lead = float(next(line for line in metrics.splitlines() if line.startswith(series)).split()[1])
    assert 0 <= lead <= MAX_LEAD_S + SLACK_S
    time.sleep(0.5)
    assert series not in http("GET", fast_server.url + "/metrics")[1].decode()  # forgotten when it ends
    assert started["max_lead_s"] == MAX_LEAD_S
    assert viewer.max_lead() <= MAX_LEAD_S + SLACK_S, viewer.leads
    played = time.monotonic() - viewer.first_at
    received_s = sum(c.frame_count for _, c in viewer.chunks) / FPS
    assert received_s <= played + MAX_LEAD_S + SLACK_S  # no backlog: the stream came at real time
    assert received_s >= played - 1.0  # and kept up
    late = [e for e in stats if e["sent"] > 4]
    assert late and all(e["lead_s"] <= MAX_LEAD_S + SLACK_S for e in late), late
    assert all(e["played_fps"] <= FPS + 2 for e in late[1:])
    assert {"lead_s", "last_switch_s", "played_fps", "generated_fps", "underruns"} <= set(late[-1])


def test_a_switch_appears_within_the_bound(fast_server):
    async def scenario():
        async with connect(fast_server.ws_url) as ws:
            viewer = Viewer(ws)
            await viewer.start()
            await viewer.play(2.5)
            switches = []
            for i, wait in enumerate((0.3, 0.45, 0.2)):  # different phases of the chunk period
                await viewer.play(wait)
                position = viewer.clock.position(time.monotonic())
                await send(ws, {"type": "session.update", "prompt": f"a green square {i}", "event_id": f"e{i}"})
                applied = await viewer.until(lambda e: e["type"] == "session.update.applied" and e["event_id"] == f"e{i}")
                switches.append((position, applied, f"a green square {i}"))
                await viewer.play(1.2)
            stats = await viewer.until(lambda e: e["type"] == "stats" and e["last_switch_s"] is not None)
            await send(ws, {"type": "session.stop"})
            return viewer, switches, stats

    viewer, switches, stats = asyncio.run(scenario())
    previous_prompt = "a red ball"
    colours = {prompt_colour(p) for p in [previous_prompt] + [p for _, _, p in switches]}
    assert len(colours) == 4  # every switch changes the picture
    for position, applied, prompt in switches:
        latency = applied["media_time_s"] - position
        assert 0 <= latency <= MAX_LEAD_S + SLACK_S, (latency, applied)
        assert abs(applied["latency_s"] - latency) <= SLACK_S  # the server's estimate agrees
        index = applied["chunk_index"]
        chunk = next(c for _, c in viewer.chunks if c.chunk_index == index)
        assert chunk.first_frame_index / FPS == pytest.approx(applied["media_time_s"])
        assert close_to(viewer.colour_of(index), prompt_colour(prompt))  # the new prompt from this chunk on
        assert close_to(viewer.colour_of(index - 1), prompt_colour(previous_prompt))  # and not before
        previous_prompt = prompt
    assert 0 <= stats["last_switch_s"] <= MAX_LEAD_S + SLACK_S
    indexes = [c.chunk_index for _, c in viewer.chunks]
    assert indexes == list(range(len(indexes)))  # nothing reordered, resent or dropped


def test_a_client_asking_for_a_larger_lead_gets_it_and_others_keep_theirs(fast_server):
    async def scenario():
        async with connect(fast_server.ws_url) as a, connect(fast_server.ws_url) as b:
            buffered, live = Viewer(a), Viewer(b)
            started = await buffered.start(max_lead_s=4.0)
            await live.start()
            await asyncio.gather(buffered.play(6.0), live.play(6.0))
            for ws in (a, b):
                await send(ws, {"type": "session.stop"})
            return buffered, live, started

    buffered, live, started = asyncio.run(scenario())
    assert started["max_lead_s"] == 4.0
    assert 3.0 <= buffered.max_lead(after=3.0) <= 4.0 + SLACK_S, buffered.leads
    assert min(lead for t, lead in buffered.leads if t >= 3.0) >= 2.5  # it stays filled
    assert live.max_lead() <= MAX_LEAD_S + SLACK_S, live.leads


def test_max_lead_is_validated(fast_server):
    async def scenario():
        async with connect(fast_server.ws_url) as ws:
            for bad in (0, -1, 61, "2"):
                await send(ws, {"type": "session.start", "prompt": "x", "max_lead_s": bad})
                event = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert event["type"] == "error" and event["code"] == "bad_request" and "max_lead_s" in event["message"]

    asyncio.run(scenario())


def test_jobs_run_unpaced(fast_server):
    seconds = 12.0  # paced, this video would take at least 12 s to make
    started = time.monotonic()
    status, video = http("POST", fast_server.url + "/v1/videos", {"prompt": "a job", "seconds": seconds})
    assert status == 200, video
    while video["status"] not in ("completed", "failed"):
        assert time.monotonic() - started < seconds, "the job ran at real-time pace (or slower)"
        time.sleep(0.1)
        video = http("GET", fast_server.url + f"/v1/videos/{video['id']}")[1]
    assert video["status"] == "completed"
    assert time.monotonic() - started < seconds * 2 / 3


def test_a_device_slower_than_real_time_says_so_and_keeps_the_lead_bounded(tmp_path):
    """1 s per 0.5 s chunk: half real time."""

    async def scenario(url):
        async with connect(url) as ws:
            viewer = Viewer(ws)
            await viewer.start()
            behind = await viewer.until(lambda e: e["type"] == "session.behind", timeout=30)
            await viewer.play(3.0)
            await send(ws, {"type": "session.stop"})
            return viewer, behind

    with start_server(tmp_path, generator=ClockedGenerator(step_s=1.0), max_lead_s=MAX_LEAD_S) as srv:
        viewer, behind = asyncio.run(scenario(srv.ws_url))
        _, metrics = http("GET", srv.url + "/metrics")
    assert behind["fps"] == FPS and 4.0 <= behind["achieved_fps"] <= 12.0, behind  # ~8
    assert behind["underruns"] >= 1
    assert viewer.max_lead(after=0.0) <= CHUNK_FRAMES / FPS + SLACK_S
    underruns = next(line for line in metrics.decode().splitlines() if line.startswith("framecast_underruns_total"))
    assert float(underruns.split()[1]) >= 1


def test_bench_serve_reports_switch_latency_and_lead(fast_server, tmp_path):
    """`framecast bench serve --url` against the paced server: the switch and lead columns."""
    from client.cli import main

    out = tmp_path / "serve.json"
    assert main(["bench", "serve", "--url", fast_server.ws_url, "--sessions", "1,2", "--seconds", "6",
                 "--switches", "3", "--lead-trace", "5", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for row in report["results"]:
        assert row["switches"] == 3 * row["sessions"]
        assert 0 <= row["switch_s_median"] <= row["switch_s_worst"] <= MAX_LEAD_S + SLACK_S
        assert 0 <= row["switch_wall_s_median"] <= row["switch_wall_s_worst"] <= MAX_LEAD_S + 2 * SLACK_S
        assert 0 < row["max_lead_s"] <= MAX_LEAD_S + SLACK_S
        assert all(abs(fps - FPS) <= 3 for fps in row["per_session_fps"])  # real time, not the device's 160
    trace = report["lead_trace"]
    assert trace["seconds"] == 5 and len(trace["leads"]) >= 8
    assert 0 < trace["max_lead_s_after_3s"] <= MAX_LEAD_S + SLACK_S
