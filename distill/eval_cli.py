"""`framecast eval`: stream a model on a prompt file and score every 5-second window.

    framecast eval --model DIR|PRESET --prompts FILE --seconds N [--seeds 0,1] [--teacher DIR]
                   [--teacher-steps 32] [--guidance G] [--switch-at K [--switch-within N]]
                   [--image-start] [--lora DIR[:SCALE]] [--device DEV] [--out DIR]

For each prompt and seed a stream is generated through the streaming generator (up to
`--max-batch` streams stepped together in one batched forward) and scored window by window with
`distill.scoring` while it is generated, so a stream of many minutes never sits in memory. Writes
`OUT/eval.json` (per run, per window, per component, and means; first / worst window and the slope
of a least-squares line over the windows, the drift of a long stream) and `OUT/eval.png` (overall
score over time), and prints a summary table.

`--switch-at K` adds the switch report (distill/switch_eval.py: streams switch prompt before chunk
K through `set_prompt`, scored against a fresh stream of the new prompt) and `--image-start` the
image-start report (distill/image_eval.py: first chunk vs the start image, next to the VAE's own
reconstruction error), both in eval.json and the printed summary.

With `--teacher DIR` the model directory's bidirectional teacher is sampled too (many steps with
classifier-free guidance, `distill.teacher_sampler`) on the same prompts, seeds and length, and
scored the same way; the report adds the teacher's scores, student / teacher score ratios and the
generation speed of both (frames per second of wall time, measured in this run).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from distill.config import EvalConfig
from distill.errors import DistillError
from distill.hue_drift import hue_drift
from distill.prompts import SHAPES, PromptParseError, parse_prompt
from distill.scoring import COMPONENTS, WindowScore, WindowScorer, shapes_by_kind
from models.load_args import add_load_arguments


@dataclass
class EvalRun:
    """One (prompt, seed) stream and its window scores."""

    prompt: str
    seed: int
    windows: list[WindowScore] = field(default_factory=list)

    def mean(self) -> dict:
        return _mean_of(self.windows)


def _mean_of(windows: list[WindowScore]) -> dict:
    """{"overall": mean, "components": {name: mean}} over `windows` (None when there are none)."""
    if not windows:
        return {"overall": None, "components": {k: None for k in COMPONENTS}}
    return {
        "overall": float(np.mean([w.overall for w in windows])),
        "components": {k: float(np.mean([w.components[k] for w in windows])) for k in COMPONENTS},
    }


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------

def read_prompts(path: str | Path) -> list[str]:
    """Prompts of a prompt file: one per line, `#` comments and blank lines skipped, each parseable."""
    path = Path(path)
    if not path.is_file():
        raise DistillError(f"prompt file not found: {path}")
    prompts = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            parse_prompt(text)
        except PromptParseError:
            raise DistillError(f"{path}:{number}: cannot score {text!r}: name objects as colour + shape "
                           f"(e.g. 'a red circle on a black background')") from None
        prompts.append(text)
    if not prompts:
        raise DistillError(f"prompt file {path} has no prompts")
    return prompts


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise DistillError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise DistillError("--seeds is empty")
    return seeds


# ---------------------------------------------------------------------------------------------
# generation + scoring
# ---------------------------------------------------------------------------------------------

def frames_per_run(seconds: float, fps: int) -> int:
    """Frames generated and scored per (prompt, seed): `seconds` of video, at least 3 (motion needs them)."""
    return max(3, int(round(seconds * fps)))


def evaluate(gen, prompts: list[str], seeds: list[int], seconds: float, window_seconds: float,
             on_frames=None) -> list[EvalRun]:
    """Stream every (prompt, seed) for `seconds` and score it per window.

    `gen` follows the streaming generator API (`info`, `open_stream`, `step`, `close_stream`);
    up to `gen.info.max_batch` streams advance together. `on_frames(n)` is called with the
    number of frames scored after each step (progress).
    """
    fps = gen.info.fps
    total_frames = frames_per_run(seconds, fps)
    queue = deque(EvalRun(p, s) for p in prompts for s in seeds)
    runs = list(queue)
    active: list[tuple[EvalRun, object, WindowScorer, list[int]]] = []  # (run, stream, scorer, [frames seen])
    while queue or active:
        while queue and len(active) < gen.info.max_batch:
            run = queue.popleft()
            active.append((run, gen.open_stream(run.prompt, seed=run.seed), WindowScorer(run.prompt, fps, window_seconds), [0]))
        chunks = gen.step([stream for _, stream, _, _ in active])
        still_active = []
        for (run, stream, scorer, seen), chunk in zip(active, chunks):
            frames = chunk.frames[: total_frames - seen[0]]  # [T, H, W, 3], trimmed to the length asked
            scorer.push(frames)
            seen[0] += len(frames)
            if on_frames:
                on_frames(len(frames))
            if seen[0] >= total_frames:
                run.windows = scorer.finish()
                gen.close_stream(stream)
            else:
                still_active.append((run, stream, scorer, seen))
        active = still_active
    return runs


def evaluate_teacher(sampler, prompts: list[str], seeds: list[int], seconds: float, window_seconds: float,
                     batch_size: int, on_frames=None) -> list[EvalRun]:
    """Sample every (prompt, seed) with the teacher (`batch_size` clips at once) and score each per window."""
    fps = sampler.fps
    total_frames = frames_per_run(seconds, fps)
    runs = [EvalRun(p, s) for p in prompts for s in seeds]
    for start in range(0, len(runs), batch_size):
        batch = runs[start:start + batch_size]
        clips = sampler.sample([r.prompt for r in batch], [r.seed for r in batch], total_frames)
        for run, clip in zip(batch, clips):
            scorer = WindowScorer(run.prompt, fps, window_seconds)
            scorer.push(clip)
            run.windows = scorer.finish()
            if on_frames:
                on_frames(len(clip))
    return runs


def summarise(runs: list[EvalRun]) -> dict:
    """Means over runs, per prompt (over seeds), per window index (drift), and the worst window."""
    n_windows = max((len(r.windows) for r in runs), default=0)
    per_window = []
    for i in range(n_windows):
        windows = [r.windows[i] for r in runs if len(r.windows) > i]
        per_window.append({"index": i, "start_s": windows[0].start_s, "end_s": windows[0].end_s, **_mean_of(windows)})
    per_prompt: dict[str, list[WindowScore]] = {}
    for r in runs:
        per_prompt.setdefault(r.prompt, []).extend(r.windows)
    first = per_window[0]["overall"] if per_window else None
    worst = min(w["overall"] for w in per_window) if per_window else None
    return {
        **_mean_of([w for r in runs for w in r.windows]),
        "per_prompt": [{"prompt": p, **_mean_of(ws)} for p, ws in per_prompt.items()],
        "shapes_by_kind": shapes_by_kind([(p, w.components["shapes"]) for p, ws in per_prompt.items() for w in ws]),
        "per_window": per_window,
        "first_window_overall": first,
        "worst_window_overall": worst,
        "worst_over_first": worst / first if first else None,  # drift: 1.0 = no window below the first
        "slope_per_minute": window_slope(per_window),  # drift: < 0 = the score falls as the stream goes on
        "last_over_first_tenth": tenths_ratio(per_window),  # drift, robust to one noisy window
    }


def shapes_by_kind_line(summary: dict) -> str:
    """'shapes per kind (prompts of one kind): circle 0.81, square 0.37, triangle 0.02' of a summary."""
    return "shapes per kind (prompts of one kind): " + ", ".join(
        f"{kind} {'n/a' if value is None else f'{value:.2f}'}" for kind, value in summary["shapes_by_kind"].items())


def window_slope(per_window: list[dict]) -> float | None:
    """Slope of the least-squares line through (window centre in minutes, mean overall score of the
    window): score change per minute of streaming (None with fewer than two windows)."""
    if len(per_window) < 2:
        return None
    minutes = np.array([(w["start_s"] + w["end_s"]) / 120.0 for w in per_window])
    scores = np.array([w["overall"] for w in per_window])
    return float(np.polyfit(minutes, scores, 1)[0])


def tenths_ratio(per_window: list[dict]) -> float | None:
    """Mean overall score of the last tenth of the windows (at least one) over that of the first tenth: a
    10-minute stream's last minute against its first. The worst window over the first compares the minimum of
    many noisy windows with one window; this compares like with like (None with fewer than two windows)."""
    if len(per_window) < 2:
        return None
    k = max(1, len(per_window) // 10)
    first = float(np.mean([w["overall"] for w in per_window[:k]]))
    last = float(np.mean([w["overall"] for w in per_window[-k:]]))
    return last / first if first else None


# ---------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------

def _runs_json(runs: list[EvalRun]) -> list[dict]:
    return [{"prompt": r.prompt, "seed": r.seed, **r.mean(), "windows": [asdict(w) for w in r.windows]} for r in runs]


def _generation(runs: list[EvalRun], seconds: float, fps: int, wall_seconds: float) -> dict:
    frames = len(runs) * frames_per_run(seconds, fps)
    return {"wall_seconds": wall_seconds, "frames": frames, "fps": frames / wall_seconds if wall_seconds else None}


def teacher_report(model: str, sampler, runs: list[EvalRun], seconds: float, wall_seconds: float) -> dict:
    """The `teacher` section of eval.json."""
    return {
        "model": model,
        "steps": sampler.steps,
        "guidance": sampler.guidance,
        "solver": sampler.solver,
        "generation": _generation(runs, seconds, sampler.fps, wall_seconds),
        "runs": _runs_json(runs),
        "summary": summarise(runs),
    }


def compare(student: dict, teacher: dict) -> dict:
    """Student / teacher ratios of the overall score, each component, and generation speed."""
    s, t = student["summary"], teacher["summary"]

    def ratio(a, b):
        return a / b if a is not None and b else None

    return {
        "overall": ratio(s["overall"], t["overall"]),
        "components": {k: ratio(s["components"][k], t["components"][k]) for k in COMPONENTS},
        "speed": ratio(student["generation"]["fps"], teacher["generation"]["fps"]),  # student FPS / teacher FPS
    }


def eval_report(model: str, info, runs: list[EvalRun], seconds: float, window_seconds: float,
                seeds: list[int], prompts_file: str, wall_seconds: float) -> dict:
    """The JSON document written as eval.json."""
    return {
        "model": model,
        "info": asdict(info),
        "prompts_file": prompts_file,
        "seconds": seconds,
        "window_seconds": window_seconds,
        "seeds": seeds,
        "components": list(COMPONENTS),
        "weights": EvalConfig().weights,
        "generation": _generation(runs, seconds, info.fps, wall_seconds),
        "runs": _runs_json(runs),
        "summary": summarise(runs),
        "hue_drift": hue_drift(runs),  # first vs last window per object colour (None for one-window runs)
    }


def write_plot(path: Path, runs: list[EvalRun], title: str, teacher_runs: list[EvalRun] | None = None) -> None:
    """PNG of the overall score per window over time: one thin line per run, the mean in bold
    (and the teacher's mean, dashed, when it was scored)."""
    curves = [([(w.start_s + w.end_s) / 2 for w in r.windows], [w.overall for w in r.windows]) for r in runs]
    x_max = max((w.end_s for r in runs for w in r.windows), default=1.0)
    mean = _mean_curve(runs)
    teacher_mean = _mean_curve(teacher_runs) if teacher_runs else None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _write_plot_pillow(path, curves, mean, teacher_mean, x_max, title)
        return
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    for x, y in curves:
        ax.plot(x, y, color="tab:blue", alpha=0.25, linewidth=1)
    ax.plot(*mean, color="tab:red", linewidth=2.5, marker="o", label="mean")
    if teacher_mean:
        ax.plot(*teacher_mean, color="black", linewidth=2, linestyle="--", marker="s", label="teacher mean")
    ax.set(xlim=(0, x_max), ylim=(0, 1.02), xlabel="time (s, window centre)", ylabel="overall score", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _mean_curve(runs: list[EvalRun]) -> tuple[list[float], list[float]]:
    """(window centres, mean overall score per window index) over runs."""
    n = max((len(r.windows) for r in runs), default=0)
    longest = next((r for r in runs if len(r.windows) == n), None)
    xs = [(w.start_s + w.end_s) / 2 for w in longest.windows] if longest else []
    return xs, [float(np.mean([r.windows[i].overall for r in runs if len(r.windows) > i])) for i in range(n)]


def _write_plot_pillow(path: Path, curves, mean_curve, teacher_curve, x_max: float, title: str) -> None:
    """The same plot drawn with Pillow (when matplotlib is not installed)."""
    from PIL import Image, ImageDraw

    width, height, margin = 800, 400, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    x_max = x_max or 1.0

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (margin + x / x_max * (width - 2 * margin), height - margin - y * (height - 2 * margin))

    draw.rectangle([margin, margin, width - margin, height - margin], outline="black")
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        _, y = to_px(0, tick)
        draw.line([margin, y, width - margin, y], fill=(225, 225, 225))
        draw.text((8, y - 6), f"{tick:.2f}", fill="black")
    for tick in np.linspace(0, x_max, 5):
        x, _ = to_px(tick, 0)
        draw.text((x - 10, height - margin + 6), f"{tick:.3g}s", fill="black")
    for x, y in curves:
        if len(x) > 1:
            draw.line([to_px(a, b) for a, b in zip(x, y)], fill=(160, 190, 230), width=1)
    for (mx, my), colour in ((teacher_curve or ([], []), (0, 0, 0)), (mean_curve, (210, 40, 40))):
        if len(mx) > 1:
            draw.line([to_px(a, b) for a, b in zip(mx, my)], fill=colour, width=3)
        for a, b in zip(mx, my):
            px, py = to_px(a, b)
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
    legend = "red: mean" + ("; black: teacher mean" if teacher_curve else "")
    draw.text((margin, 15), f"{title}  (overall score per window; {legend})", fill="black")
    image.save(path)


_SHORT_NAMES = {"overall": "all", "background": "bg", "colours": "col", "shapes": "shp", "count": "cnt",
                "motion": "mot", "flicker": "flk", "saturation": "sat"}  # table headers


def print_summary(report: dict) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    summary = report["summary"]
    table = Table(title=f"framecast eval: {report['model']} ({report['seconds']:g} s x {len(report['seeds'])} seed(s))",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("prompt", overflow="ellipsis", no_wrap=True, min_width=16, max_width=40)
    for name in ("overall", *COMPONENTS):
        table.add_column(_SHORT_NAMES.get(name, name), justify="right", min_width=4, no_wrap=True)
    for row in summary["per_prompt"]:
        table.add_row(row["prompt"], f"{row['overall']:.2f}", *(f"{row['components'][k]:.2f}" for k in COMPONENTS))
    table.add_row("[bold]mean", f"[bold]{summary['overall']:.2f}", *(f"{summary['components'][k]:.2f}" for k in COMPONENTS))
    console = Console()
    if not console.is_terminal:  # logs and pipes: wide enough for every column
        console = Console(width=max(console.width, 110))
    console.print(table)
    console.print("bg background, col colours, shp shapes, cnt count, mot motion, flk flicker, sat saturation")
    console.print(shapes_by_kind_line(summary))
    slope = summary.get("slope_per_minute")
    console.print(f"windows: first {summary['first_window_overall']:.3f}, worst {summary['worst_window_overall']:.3f} "
                  f"(worst/first {summary['worst_over_first'] or 0:.3f}), slope "
                  + ("n/a" if slope is None else f"{slope:+.4f}/min")
                  + ("" if summary.get("last_over_first_tenth") is None
                     else f", last/first tenth {summary['last_over_first_tenth']:.3f}")
                  + f"; generated {report['generation']['fps']:.1f} FPS")
    drift = report.get("hue_drift")
    if drift:
        rgb = "n/a" if drift["median_rgb_distance"] is None else f"{drift['median_rgb_distance']:.1f}"
        console.print(f"hue drift (first vs last window): {drift['kept_share']:.0%} of {len(drift['objects'])} objects keep "
                      f"their colour; presence {drift['mean_presence_first']:.2f} -> {drift['mean_presence_last']:.2f}, "
                      f"median RGB shift {rgb}")
    for key in ("switch", "switch_cut"):
        if key in report:
            print_switch(console, report[key])
    if "image_start" in report:
        i = report["image_start"]["summary"]
        console.print(f"image start (mean |pixel error|, 0-255): first frame {i['first_frame']:.2f}, first chunk "
                      f"{i['first_chunk']:.2f}; VAE reconstruction {i['vae_reconstruction']:.2f}; the ground truth's "
                      f"own motion {i['ground_truth_motion']:.2f}, through the VAE {i['ground_truth_reconstruction']:.2f}; "
                      f"without the image {i['without_image']:.2f}")
    if "teacher" in report:
        teacher, ratio = report["teacher"], report["student_over_teacher"]
        t = teacher["summary"]
        console.print(f"teacher ({teacher['steps']} steps, guidance {teacher['guidance']:g}): overall {t['overall']:.3f}, "
                      + ", ".join(f"{_SHORT_NAMES[k]} {t['components'][k]:.2f}" for k in COMPONENTS)
                      + f"; generated {teacher['generation']['fps']:.1f} FPS")
        console.print("teacher " + shapes_by_kind_line(t))
        score = "n/a (teacher scored 0)" if ratio["overall"] is None else f"{ratio['overall']:.3f}"
        speed = "n/a" if ratio["speed"] is None else f"{ratio['speed']:.1f}x"
        console.print(f"[bold]student / teacher: score {score}, speed {speed}")
        from distill.noise_capture import noise_capture_line

        console.print(noise_capture_line(teacher["noise_capture"]))


def print_switch(console, switch: dict) -> None:
    """The switch report's lines: new prompt's score after the switch vs a fresh stream, per chunk, and the jump."""
    s = switch["summary"]

    def num(v, fmt=".3f"):
        return "n/a" if v is None else format(v, fmt)

    chunks = ", ".join(f"chunk {c['chunk']} {num(c['ratio'])}" for c in s["per_chunk"])
    how = "cut" if switch.get("cut") else f"transition {switch['transition_chunks']}"
    console.print(f"switch before chunk {switch['switch_at_chunk']} ({how}): next "
                  f"{switch['within_chunks']} chunks score {num(s['switched_overall'])} vs fresh {num(s['fresh_overall'])} "
                  f"(ratio {num(s['ratio'])}; objects {num(s['switched_objects'])} vs {num(s['fresh_objects'])}; {chunks})")
    console.print(f"  jump across the switch {num(s['jump_switched'], '.1f')} levels (fresh stream, same boundary: "
                  f"{num(s['jump_fresh'], '.1f')}; frame to frame after it: {num(s['steady_after'], '.1f')})")


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def register(sub: argparse._SubParsersAction) -> None:
    defaults = EvalConfig()
    p = sub.add_parser("eval", help="score a model's streams against their prompts, per 5-second window "
                       "(avatar models: lip-sync, stillness on silence, identity; distill/avatar_eval.py)")
    p.add_argument("--model", required=True, help="model directory or preset name (e.g. shapes, tiny)")
    p.add_argument("--prompts", default=defaults.prompts, help="prompt file: one per line, # comments (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=defaults.seconds, help="stream length per prompt and seed (default: %(default)s)")
    p.add_argument("--seeds", default=",".join(map(str, defaults.seeds)), help="comma-separated seeds (default: %(default)s)")
    p.add_argument("--window-seconds", type=float, default=defaults.window_seconds, help="scoring window (default: %(default)s)")
    p.add_argument("--max-batch", type=int, default=defaults.max_batch, help="streams generated together (default: %(default)s)")
    p.add_argument("--teacher", default=None, help="also score this model directory's teacher/ (bidirectional, "
                   "many steps with CFG) on the same prompts and seeds, and report student / teacher ratios")
    p.add_argument("--teacher-steps", type=int, default=None, help="teacher sampling steps (default: the model's teacher_steps)")
    p.add_argument("--guidance", type=float, default=None, help="teacher CFG scale (default: the model's guidance_scale; "
                   "avatar models: 1, their text is constant)")
    p.add_argument("--audio-guidance", type=float, default=1.0, help="avatar models' teacher: audio guidance scale s_a "
                   "(1 = the plain conditional flow; set it to the recipe's ode_pairs.audio_guidance) (default: %(default)s)")
    p.add_argument("--switch-at", type=int, default=defaults.switch_at, metavar="CHUNK",
                   help="also the switch report: streams switch to the next prompt of the file before chunk CHUNK "
                   "(set_prompt, as the server does), scored against a fresh stream of that prompt (0 = off)")
    p.add_argument("--switch-within", type=int, default=defaults.switch_within, metavar="N",
                   help="switch report: chunks after the switch scored against the new prompt (default: %(default)s)")
    p.add_argument("--transition-chunks", type=int, default=defaults.transition_chunks,
                   help="switch report: blend the prompt embedding over this many chunks (default: %(default)s)")
    p.add_argument("--switch-cut", action="store_true", help="switch report: also the same switches as scene cuts "
                   "(session.update cut: the new prompt from an empty cache), written as switch_cut")
    p.add_argument("--image-start", action="store_true", help="also the image-start report: streams started from a "
                   "ground-truth first frame; pixel error of the first chunk vs the image and the VAE's reconstruction")
    p.add_argument("--stages", action="store_true", help="instead: the stage-by-stage quality table (clips, VAE "
                   "reconstruction, teacher, ode-init student, student) of a model directory, written to OUT/stages.json")
    p.add_argument("--ode-init", default=None, help="with --stages: the ode-init student (a transformer/model folder "
                   "or the stage's trainer checkpoint, e.g. runs/shapes/ode-init/ckpt.pt)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: first GPU, else CPU)")
    add_load_arguments(p)
    p.add_argument("--out", default=defaults.out_dir, help="output folder for eval.json and eval.png (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from distill.avatar_eval import is_avatar_model, run_avatar

    if not args.stages and is_avatar_model(args.model):  # lip-sync / stillness / identity (and the teacher's)
        if args.seconds <= 0 or args.window_seconds <= 0 or args.max_batch < 1:
            raise DistillError("--seconds and --window-seconds must be positive, --max-batch at least 1")
        return run_avatar(args, parse_seeds(args.seeds))
    prompts = read_prompts(args.prompts)
    seeds = parse_seeds(args.seeds)
    if args.seconds <= 0 or args.window_seconds <= 0:
        raise DistillError("--seconds and --window-seconds must be positive")
    if args.max_batch < 1:
        raise DistillError("--max-batch must be at least 1")
    if args.teacher_steps is not None and args.teacher_steps < 1:
        raise DistillError("--teacher-steps must be at least 1")
    if args.switch_at < 0 or args.switch_within < 1 or args.transition_chunks < 0:
        raise DistillError("--switch-at must be >= 0, --switch-within >= 1, --transition-chunks >= 0")
    if args.switch_cut and not args.switch_at:
        raise DistillError("--switch-cut needs --switch-at")
    if args.switch_at and len(set(prompts)) < 2:
        raise DistillError("--switch-at needs a prompt file with at least two different prompts")
    if args.stages:
        return run_stages(args, prompts, seeds)
    from models import load_generator
    from models.errors import ModelError

    try:
        gen = load_generator(args.model, device=args.device, max_batch=args.max_batch, lora=args.lora,
                             text_device=args.text_device)
    except RuntimeError as exc:  # e.g. CUDA asked for without a GPU
        raise DistillError(f"cannot load {args.model!r}: {exc}") from None
    sampler = None
    if args.teacher:
        from distill.teacher_sampler import TeacherSampler

        try:
            sampler = TeacherSampler(args.teacher, device=args.device, steps=args.teacher_steps, guidance=args.guidance)
        except ModelError as exc:
            raise DistillError(f"--teacher: {exc}") from None

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    total = len(prompts) * len(seeds) * frames_per_run(args.seconds, gen.info.fps)
    teacher_runs = None
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} frames"),
                  TimeRemainingColumn()) as progress:
        task = progress.add_task("eval", total=total)
        start = time.perf_counter()
        runs = evaluate(gen, prompts, seeds, args.seconds, args.window_seconds,
                        on_frames=lambda n: progress.advance(task, n))
        wall = time.perf_counter() - start
        if sampler is not None:
            teacher_task = progress.add_task("teacher", total=total)
            start = time.perf_counter()
            teacher_runs = evaluate_teacher(sampler, prompts, seeds, args.seconds, args.window_seconds, args.max_batch,
                                            on_frames=lambda n: progress.advance(teacher_task, n))
            teacher_wall = time.perf_counter() - start

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = eval_report(args.model, gen.info, runs, args.seconds, args.window_seconds, seeds, str(args.prompts), wall)
    if args.switch_at:
        from distill.switch_eval import evaluate_switches

        report["switch"] = evaluate_switches(gen, prompts, seeds, args.switch_at, args.switch_within, args.transition_chunks)
        if args.switch_cut:
            report["switch_cut"] = evaluate_switches(gen, prompts, seeds, args.switch_at, args.switch_within, cut=True)
    if args.image_start:
        from distill.image_eval import evaluate_image_start

        report["image_start"] = evaluate_image_start(gen, prompts, seeds)
    if sampler is not None:
        from distill.noise_capture import shapes_noise_capture

        report["teacher"] = teacher_report(args.teacher, sampler, teacher_runs, args.seconds, teacher_wall)
        report["teacher"]["noise_capture"] = shapes_noise_capture(sampler, prompts, seeds)
        report["student_over_teacher"] = compare(report, report["teacher"])
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    write_plot(out / "eval.png", runs, f"{args.model}: {len(prompts)} prompts x {len(seeds)} seeds", teacher_runs)
    print_summary(report)
    print(f"wrote {out / 'eval.json'} and {out / 'eval.png'}")
    return 0


def run_stages(args: argparse.Namespace, prompts: list[str], seeds: list[int]) -> int:
    """`framecast eval --stages`: the stage table of `distill.stage_quality`, printed and written as JSON."""
    from rich.console import Console
    from rich.table import Table

    from distill.stage_quality import stage_table

    try:
        rows = stage_table(args.model, prompts, seeds, args.seconds, ode_init=args.ode_init,
                           teacher_steps=args.teacher_steps, guidance=args.guidance, device=args.device,
                           max_batch=args.max_batch)
    except FileNotFoundError as exc:  # e.g. an --ode-init path that does not exist
        raise DistillError(str(exc)) from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"model": args.model, "prompts_file": str(args.prompts), "seeds": seeds, "seconds": args.seconds,
              "ode_init": args.ode_init, "components": list(COMPONENTS), "rows": rows}
    (out / "stages.json").write_text(json.dumps(report, indent=2) + "\n")
    table = Table(title=f"quality by stage: {args.model} ({len(prompts)} prompts x {len(seeds)} seed(s), {args.seconds:g} s)")
    table.add_column("stage")
    for name in ("overall", *COMPONENTS):
        table.add_column(_SHORT_NAMES.get(name, name), justify="right")
    table.add_column("shp " + "/".join(k[:3] for k in SHAPES), justify="right")  # shapes per kind: cir/squ/tri
    for name, row in rows.items():
        by_kind = "/".join("-" if v is None else f"{v:.2f}" for v in row["shapes_by_kind"].values())
        table.add_row(name, f"{row['overall']:.3f}", *(f"{row['components'][k]:.2f}" for k in COMPONENTS), by_kind)
    Console(width=140).print(table)
    print("shp cir/squ/tri: the shapes component of the prompts that name circles / squares / triangles only")
    print(f"wrote {out / 'stages.json'}")
    return 0
