"""The server's benchmark commands run end to end and write their JSON reports (their figures
go to docs/BENCHMARKS.md; nothing here checks a speed)."""

import asyncio
import json
import math
import subprocess
import sys
import threading
import time

from client.cli import main
from tests.server_harness import REPO, clean_env, connect, next_event, send, start_server

SECONDS = 0.5  # 8 frames of the tiny model (16 fps): a clip, its extension, the whole length


def test_bench_extend_writes_json(tmp_path):
    out = tmp_path / "extend.json"
    args = ["bench", "extend", "--model", "tiny", "--device", "cpu", "--seconds", str(SECONDS), "--repeats", "1"]
    assert main([*args, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["benchmark"] == "extend" and report["model"] == "tiny" and report["command"].startswith("framecast")
    (run,) = report["runs"]
    assert run["extended_frames"] == round(2 * SECONDS * 16)  # the clip plus its extension, stitched
    assert all(run[k] > 0 for k in ("clip_s", "extend_s", "whole_s"))
    assert math.isfinite(run["seam_ratio"]) and run["seam_ratio"] > 0
    assert report["extend_over_clip"] == round(run["extend_s"] / run["clip_s"], 2)


def test_bench_extend_rejects_bad_arguments(capsys):
    assert main(["bench", "extend", "--model", "tiny", "--seconds", "0"]) == 2
    assert "--seconds" in capsys.readouterr().err


class _SlowStep:
    """The shared generator with a step that takes `seconds` longer (and says when it began)."""

    def __init__(self, gen, seconds: float):
        self._gen, self.seconds, self.began = gen, seconds, threading.Event()

    def __getattr__(self, name):
        return getattr(self._gen, name)

    def step(self, *args, **kwargs):
        self.began.set()
        time.sleep(self.seconds)
        return self._gen.step(*args, **kwargs)


def test_server_exit_waits_for_the_step_in_flight(tmp_path):
    """Leaving a server waits for its device thread even past the shutdown grace: a daemon thread
    still inside a torch op at interpreter exit aborts the process (exit 134, seen from bench serve)."""
    with start_server(tmp_path, shutdown_grace_s=0.0) as server:
        engine = server.app.state.framecast.engine
        engine.gen = slow = _SlowStep(engine.gen, seconds=3.0)

        async def start_one():
            async with connect(server.ws_url) as ws:
                await send(ws, {"type": "session.start", "prompt": "slow", "seed": 1})
                await next_event(ws, "session.started", timeout=120)
                await asyncio.to_thread(slow.began.wait, 120)

        asyncio.run(start_one())
    assert not engine._thread.is_alive()
    engine.gen = slow._gen


def test_bench_serve_exits_0(tmp_path):
    """The whole command, as scripts/gpu-check.sh runs it: exit code 0 after its JSON."""
    out = tmp_path / "serve.json"
    command = [sys.executable, "-m", "client.cli", "bench", "serve", "--model", "tiny", "--device", "cpu",
               "--sessions", "1", "--seconds", "1", "--switches", "0", "--json", str(out)]
    proc = subprocess.run(command, cwd=REPO, env=clean_env(FRAMECAST_SHUTDOWN_GRACE_S="0"), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert json.loads(out.read_text())["results"][0]["sessions"] == 1


def test_bench_hostile_writes_json(tmp_path):
    """A short `bench hostile`: every ended session freed, the flooder cut off, the attackers refused."""
    out = tmp_path / "hostile.json"
    assert main(["bench", "hostile", "--model", "tiny", "--device", "cpu", "--max-sessions", "2", "--sessions", "4",
                 "--chunk-every", "2", "--flood-seconds", "5", "--phase-seconds", "2", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    teardown, flood, attack = results["teardown"], results["ping-flood"], results["image-attack"]
    assert teardown["sessions"] >= 4 and teardown["live_objects_after"] == teardown["live_objects_before"]
    assert teardown["endings"]["errors"] == 0 and sum(teardown["live_objects_after"].values()) == 0
    assert flood["disconnected"] and flood["close_code"] == 1013 and flood["pongs_received"] < flood["pings_sent"]
    assert attack["attacker_replies"].get("too_large", 0) > 0 and "internal" not in attack["attacker_replies"]
