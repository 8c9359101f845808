"""`framecast bench extend` (server/bench_extend.py) in its parts: its job client over a real server
(model tiny), the table it prints and the arguments it refuses before loading a model. The whole
command, end to end: tests/server/test_bench_cli.py."""

import httpx
import pytest

from client.cli import main
from server.bench_extend import _Jobs, _print_table, _timed
from server.jobs.files import JobFiles
from server.media import read_frames
from tests.server_harness import http, start_server

SECONDS = 0.5  # 8 frames of the tiny model (16 fps)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with start_server(tmp_path_factory.mktemp("bench-extend"), max_running_jobs=1) as srv:
        yield srv


@pytest.fixture
def jobs(server):
    client = _Jobs(server.url)
    yield client
    client.close()


def test_clip_then_extension_by_id_timed_to_completion(server, jobs, tmp_path):
    clip_id, clip_s = _timed(jobs, lambda: jobs.create("a red circle", seconds=SECONDS, seed=4))
    _, clip = http("GET", f"{server.url}/v1/videos/{clip_id}")
    assert clip["status"] == "completed" and clip["seconds"] == "0.5" and clip["seed"] == 4 and clip_s > 0
    extend_id, extend_s = _timed(jobs, lambda: jobs.extend("a blue square", SECONDS, video_id=clip_id))
    _, extended = http("GET", f"{server.url}/v1/videos/{extend_id}")
    assert extended["status"] == "completed" and extended["extends_video_id"] == clip_id and extend_s > 0
    assert extended["prompt"] == "a blue square" and extended["duration_s"] == 2 * SECONDS
    path = tmp_path / "extended.mp4"
    assert jobs.download(extend_id, str(path)) == str(path)
    assert len(read_frames(path)) == round(2 * SECONDS * 16)  # the clip and its extension, stitched


def test_wait_raises_naming_the_failed_job_and_its_error(server, jobs):
    clip_id = jobs.create("a red circle", seconds=SECONDS, seed=5)
    jobs.wait(clip_id)
    # the video goes, its saved state stays: the extension is accepted, then fails
    JobFiles(server.app.state.settings.data_dir).video(clip_id).unlink()
    extend_id = jobs.extend("a blue square", SECONDS, video_id=clip_id)
    with pytest.raises(RuntimeError, match=rf"bench job {extend_id} failed: .*{clip_id} is gone"):
        jobs.wait(extend_id)


def test_http_errors_raise_instead_of_passing_error_bodies_on(jobs, tmp_path):
    with pytest.raises(httpx.HTTPStatusError) as err:
        jobs.extend("a blue square", SECONDS, video_id="video_missing")
    assert err.value.response.status_code == 404
    with pytest.raises(httpx.HTTPStatusError) as err:
        jobs.download("video_missing", str(tmp_path / "missing.mp4"))
    assert err.value.response.status_code == 404 and not (tmp_path / "missing.mp4").exists()


def test_table_shows_the_medians_and_ratios(capsys):
    report = {"model": "tiny", "device": "cpu", "seconds": 0.5, "runs": [{}, {}, {}],
              "median": {"clip_s": 1.234, "extend_s": 0.617, "whole_s": 2.468, "seam_ratio": 1.0749},
              "extend_over_clip": 0.5, "extend_over_whole": 0.25}
    _print_table(report)
    out = capsys.readouterr().out
    assert "extend (tiny on cpu, median of 3)" in out and all(h in out for h in ("job", "video s", "wall s"))
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:4]]
            for line in out.splitlines() if line.count("│") == 4}
    assert rows == {"clip from scratch": ["0.5", "1.23"],
                    "extend it by 0.5 s (by id)": ["1 (new 0.5)", "0.62"], "whole length from scratch": ["1", "2.47"]}
    assert "extend / clip = 0.5, extend / whole = 0.25, seam ratio = 1.07" in out


@pytest.mark.parametrize("args", [["--repeats", "0"], ["--seconds", "nan"], ["--seconds", "inf"], ["--seconds", "-1"]])
def test_bad_arguments_are_refused_before_loading_a_model(args, capsys):
    assert main(["bench", "extend", "--model", "/nonexistent/model", "--device", "cpu", *args]) == 2
    err = capsys.readouterr().err
    assert "--seconds must be a finite number > 0 and --repeats >= 1" in err and "Traceback" not in err
