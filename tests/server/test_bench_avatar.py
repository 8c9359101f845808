"""`framecast bench avatar` (server/bench_avatar.py) on the `tiny-avatar` model: a local run's report
holds a measurement for every burst of every session, and against a running server the audio the
model hears is the bench's: silence with `--bursts` short tones after the warm-up. Nothing here checks
a latency's size (those figures go to docs/BENCHMARKS.md)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from client.cli import main
from server.bench_avatar import BURST_S, WARMUP_S
from tests.server.test_avatar_job_continue import loud_spans
from tests.server.test_avatar_serving import Spy
from tests.server_harness import start_server, tiny_avatar_generator

SECONDS = 3.5  # of audio per session, sent in real time: bursts between 2.0 and 2.5 s
BURSTS = 3


def test_local_run_measures_every_burst_of_every_session(tmp_path):
    out = tmp_path / "avatar.json"
    assert main(["bench", "avatar", "--model", "tiny-avatar", "--device", "cpu", "--sessions", "1,2",
                 "--seconds", str(SECONDS), "--bursts", str(BURSTS), "--format", "jpeg", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["benchmark"], report["model"], report["device"]) == ("avatar", "tiny-avatar", "cpu")
    assert (report["seconds"], report["bursts"], report["format"]) == (SECONDS, BURSTS, "jpeg")
    assert [r["sessions"] for r in report["results"]] == [1, 2]
    for row in report["results"]:
        n, raw = row["sessions"], row["raw"]
        assert len(raw) == n and row["per_session_fps"] == [r["fps"] for r in raw]
        assert row["bursts_seen"] == n * BURSTS and row["underruns"] == sum(r["underruns"] for r in raw)
        playable = [x for r in raw for x in r["playable_s"]]
        screen = [x for r in raw for x in r["screen_s"]]
        for key, values in (("playable", playable), ("screen", screen)):
            for q in (50, 95):
                assert row[f"{key}_s_p{q}"] == round(float(np.percentile(values, q)), 3)
        for r in raw:
            assert len(r["playable_s"]) == len(r["screen_s"]) == BURSTS
            # a burst's frame is on screen no sooner than it is playable, and only after the burst was sent
            assert all(0 <= p <= s for p, s in zip(r["playable_s"], r["screen_s"]))
            assert r["frames"] > 0 and r["fps"] > 0 and r["ttff_s"] > 0


def test_against_a_running_server_the_model_hears_the_burst(tmp_path, capsys):
    """...and each session opens with a face, as an avatar client does (a drawn one by default), so its first
    chunk is the face's frame plus a chunk."""
    from PIL import Image

    from server.bench_avatar import drawn_face

    gen = tiny_avatar_generator()
    opened = []
    open_ = gen.open
    gen.open = lambda conditioning: opened.append(conditioning.image) or open_(conditioning)
    out = tmp_path / "avatar.json"
    with start_server(tmp_path / "data", generator=gen) as server, Spy(gen) as spy:
        assert main(["bench", "avatar", "--url", server.ws_url, "--seconds", str(SECONDS), "--bursts", "1",
                     "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["model"], report["device"], report["format"], report["image"]) == ("remote", "remote", "fmp4", "face")
    assert report["results"][0]["bursts_seen"] == 1
    face = np.array(Image.open(io.BytesIO(drawn_face(0))).convert("RGB"))
    assert len(opened) == 1 and np.array_equal(opened[0], face)
    assert report["results"][0]["raw"][0]["first_chunk_frames"] == gen.frames_in_chunk(0, has_image=True)
    assert "framecast bench avatar" in capsys.readouterr().out  # the table
    # what the model heard, placed by media time: one tone burst after the warm-up, silence elsewhere
    rate = gen.info.audio_sample_rate
    [(on, off)] = loud_spans(spy.heard(), rate, gap_s=0.01)  # (a 220 Hz tone dips below the threshold each cycle)
    assert WARMUP_S <= on and off <= SECONDS - 1.0 + BURST_S
    # audio that reaches the server after its chunk was made is silence (the stream never waits), so on a loaded
    # machine the model may hear only part of the burst; never more of it, nor a stretched one
    assert 0.5 * BURST_S <= off - on <= BURST_S + 0.01


def test_a_model_without_audio_and_bad_counts_are_one_line_errors(capsys):
    assert main(["bench", "avatar", "--model", "tiny", "--device", "cpu", "--seconds", "3"]) == 2
    assert main(["bench", "avatar", "--model", "tiny-avatar", "--sessions", "0"]) == 2
    assert main(["bench", "avatar", "--model", "tiny-avatar", "--image", "no/such/face.png"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("framecast: error:") for e in errors)
    assert "'tiny' takes no audio" in errors[0] and "--sessions" in errors[1] and "no/such/face.png" in errors[2]
