"""`framecast bench extend`: what an extension costs against rendering from scratch.

Through a real in-process server and the job API (nothing else running): render a `--seconds`
clip, extend it by `--seconds` more (`POST /v1/videos/extensions` with the job's id: the stream
resumes from the job's saved state), and render a clip of the total length from scratch. Each
job is timed from POST to `completed` (polled every 20 ms); the extension should cost about the
first clip's time, not the whole length's. The extended video's join is scored with
`server.media.seam_ratio` (the frame difference across the join over the median within the
video; about 1 = no visible cut). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time

from server import bench_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="preset or model directory (default: the server default)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: first GPU, else CPU)")
    parser.add_argument("--seconds", type=float, default=4.0, help="clip length, and the extension's (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the three jobs; medians reported (default 3)")
    parser.add_argument("--json", dest="json_path", default=None, help="write the results here")


class _Jobs:
    """The three job calls the bench makes, over plain HTTP (the server may not import client.jobs)."""

    def __init__(self, url: str):
        import httpx

        self.http = httpx.Client(base_url=url + "/v1", timeout=600)

    def _id(self, response) -> str:
        response.raise_for_status()
        return response.json()["id"]

    def create(self, prompt: str, seconds: float, seed: int) -> str:
        return self._id(self.http.post("/videos", json={"prompt": prompt, "seconds": str(seconds), "seed": seed}))

    def extend(self, prompt: str, seconds: float, video_id: str) -> str:
        return self._id(self.http.post("/videos/extensions",
                                       json={"prompt": prompt, "seconds": str(seconds), "video": {"id": video_id}}))

    def wait(self, video_id: str) -> None:
        while (video := self.http.get(f"/videos/{video_id}").json())["status"] in ("queued", "in_progress"):
            time.sleep(0.02)
        if video["status"] != "completed":
            raise RuntimeError(f"bench job {video_id} {video['status']}: {video.get('error')}")

    def download(self, video_id: str, path: str) -> str:
        response = self.http.get(f"/videos/{video_id}/content")
        response.raise_for_status()
        with open(path, "wb") as f:
            f.write(response.content)
        return path

    def close(self) -> None:
        self.http.close()


def _timed(jobs: _Jobs, make) -> tuple[str, float]:
    started = time.perf_counter()
    video_id = make()
    jobs.wait(video_id)
    return video_id, time.perf_counter() - started


def run(args: argparse.Namespace) -> int:
    from server.app import load_model
    from server.media import read_frames, seam_ratio
    from server.serve import ServerThread
    from server.settings import ServeError, Settings

    if not (args.seconds > 0 and math.isfinite(args.seconds)) or args.repeats < 1:  # nan and inf too
        raise ServeError("--seconds must be a finite number > 0 and --repeats >= 1")
    runs = []
    with tempfile.TemporaryDirectory(prefix="framecast-bench-") as data_dir:
        overrides = {"model": args.model} if args.model else {}
        settings = Settings(**overrides, host="127.0.0.1", port=0, device=args.device, max_sessions=1,
                            max_running_jobs=1, max_job_seconds=max(60.0, 2 * args.seconds), data_dir=data_dir)
        generator = load_model(settings)
        device = generator.info.device
        with ServerThread(settings, generator=generator) as server:
            jobs = _Jobs(server.url)
            for i in range(args.repeats):
                clip_id, clip_s = _timed(jobs, lambda: jobs.create("bench: a red circle", seconds=args.seconds, seed=i))
                extend_id, extend_s = _timed(jobs, lambda: jobs.extend("bench: a blue square", args.seconds,
                                                                       video_id=clip_id))
                _, whole_s = _timed(jobs, lambda: jobs.create("bench: a red circle", seconds=2 * args.seconds, seed=i))
                frames = read_frames(jobs.download(extend_id, f"{data_dir}/extended.mp4"))
                seam = seam_ratio(frames, round(args.seconds * generator.info.fps))
                runs.append({"clip_s": clip_s, "extend_s": extend_s, "whole_s": whole_s, "seam_ratio": seam,
                             "extended_frames": len(frames)})
            jobs.close()
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    report = bench_report.report(
        "extend", device=str(device), model=generator.info.name, seconds=args.seconds, runs=runs, median=median,
        extend_over_clip=round(median["extend_s"] / median["clip_s"], 2),
        extend_over_whole=round(median["extend_s"] / median["whole_s"], 2),
    )
    _print_table(report)
    bench_report.write_report(report, args.json_path)
    return 0


def _print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    s, m = report["seconds"], report["median"]
    table = Table(title=f"extend ({report['model']} on {report['device']}, median of {len(report['runs'])})")
    table.add_column("job")
    table.add_column("video s", justify="right")
    table.add_column("wall s", justify="right")
    table.add_row("clip from scratch", f"{s:g}", f"{m['clip_s']:.2f}")
    table.add_row(f"extend it by {s:g} s (by id)", f"{2 * s:g} (new {s:g})", f"{m['extend_s']:.2f}")
    table.add_row("whole length from scratch", f"{2 * s:g}", f"{m['whole_s']:.2f}")
    Console().print(table)
    print(f"extend / clip = {report['extend_over_clip']}, extend / whole = {report['extend_over_whole']}, "
          f"seam ratio = {m['seam_ratio']:.2f} (1 = like any other frame step)")
