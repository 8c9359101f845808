"""`framecast eval-compare`: the paired difference between two `framecast eval` reports.

    framecast eval-compare BEFORE AFTER [--before-side student|teacher] [--after-side ...] [--json OUT]

Two models scored on the same prompts and seeds differ by much less than the clips differ from
each other, so the means of two reports say little on their own: on the shapes eval the overall
score spreads 0.3-0.7 over prompts, while a retrain moves it by 0.02. Pairing each (prompt, seed)
run of one report with the same run of the other removes that spread: the mean of the per-run
differences d_i = after_i - before_i comes with its standard error s_d / sqrt(n) (s_d the sample
standard deviation of the d_i), the count of runs that went up and down, and the same for every
component and every prompt (its seeds' mean difference). The reports' other per-run sections are
paired the same way when both have them: the switch reports (`switch`, `switch_cut`: the new
prompt's score and its objects within N chunks of a switch, paired by (from, to, seed)) and the
image-start report (first-chunk error against the start image, levels; lower is better).

BEFORE and AFTER are eval.json files or the folders holding them; `--*-side teacher` takes a
report's teacher section (written by `framecast eval --teacher`), so a student can be compared with
its own teacher, or two teachers with each other. Runs present in only one report are an error (a
paired difference over different clips is not one), named in the message.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from distill.errors import DistillError
from distill.scoring import COMPONENTS

SIDES = ("student", "teacher")


def load_report(path: str | Path) -> dict:
    """An eval.json document: `path` itself, or `path/eval.json` when it is a folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "eval.json"
    if not path.is_file():
        raise DistillError(f"no eval report at {path} (run `framecast eval ... --out DIR` first)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DistillError(f"{path} is not JSON: {exc}") from exc


def side_runs(report: dict, side: str, name: str) -> list[dict]:
    """The per-(prompt, seed) runs of a report's student (its own runs) or its teacher section."""
    if side not in SIDES:
        raise DistillError(f"side must be one of {', '.join(SIDES)}, not {side!r}")
    section = report if side == "student" else report.get("teacher")
    if section is None:
        raise DistillError(f"{name} has no teacher section (it was not run with `framecast eval --teacher`)")
    return section["runs"]


def paired_stats(before: list[float], after: list[float]) -> dict:
    """Mean of the paired differences after - before, its standard error (None for one pair) and the counts."""
    diffs = [a - b for b, a in zip(before, after)]
    n = len(diffs)
    mean = sum(diffs) / n
    se = None
    if n > 1:
        var = sum((d - mean) ** 2 for d in diffs) / (n - 1)
        se = math.sqrt(var / n)
    return {
        "before": sum(before) / n,
        "after": sum(after) / n,
        "difference": mean,
        "standard_error": se,
        "z": mean / se if se else None,
        "n": n,
        "up": sum(d > 0 for d in diffs),
        "down": sum(d < 0 for d in diffs),
    }


def _pair(before: list[dict], after: list[dict], key, what: str) -> list[tuple[dict, dict]]:
    """Runs of both lists matched by `key(run)`; an error naming the first runs only one list has."""
    b = {key(r): r for r in before}
    a = {key(r): r for r in after}
    only_b, only_a = sorted(set(b) - set(a), key=str), sorted(set(a) - set(b), key=str)
    if only_b or only_a:
        def show(keys):
            return "; ".join(map(str, keys[:3])) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
        parts = ([f"only BEFORE has {show(only_b)}"] if only_b else []) + ([f"only AFTER has {show(only_a)}"] if only_a else [])
        raise DistillError(f"the two {what} are not the same prompts and seeds: {', '.join(parts)}")
    return [(b[k], a[k]) for k in b]


def compare_runs(before: list[dict], after: list[dict]) -> dict:
    """Paired statistics of the overall score, each component and each prompt."""
    pairs = _pair(before, after, lambda r: (r["prompt"], r["seed"]), "reports' runs")
    pairs = [(b, a) for b, a in pairs if b["overall"] is not None and a["overall"] is not None]
    if not pairs:
        raise DistillError("the two reports have no scored run in common")
    out = {"overall": paired_stats([b["overall"] for b, _ in pairs], [a["overall"] for _, a in pairs]),
           "components": {}, "per_prompt": []}
    for name in COMPONENTS:
        both = [(b["components"].get(name), a["components"].get(name)) for b, a in pairs]
        both = [(x, y) for x, y in both if x is not None and y is not None]
        if both:
            out["components"][name] = paired_stats([x for x, _ in both], [y for _, y in both])
    prompts = list(dict.fromkeys(b["prompt"] for b, _ in pairs))
    for prompt in prompts:
        mine = [(b, a) for b, a in pairs if b["prompt"] == prompt]
        out["per_prompt"].append({"prompt": prompt, **paired_stats([b["overall"] for b, _ in mine],
                                                                    [a["overall"] for _, a in mine])})
    return out


def compare_switch(before: dict, after: dict) -> dict:
    """Paired statistics of the new prompt's score and objects within the report's chunks after a switch."""
    for key in ("switch_at_chunk", "within_chunks", "transition_chunks", "cut"):
        if before.get(key) != after.get(key):
            raise DistillError(f"the switch reports differ in {key}: {before.get(key)} vs {after.get(key)}")
    pairs = _pair(before["runs"], after["runs"], lambda r: (r["from"], r["to"], r["seed"]), "switch reports")
    return {metric: paired_stats([b["switched"][metric] for b, _ in pairs], [a["switched"][metric] for _, a in pairs])
            for metric in ("overall", "objects")}


def compare_image_start(before: dict, after: dict) -> dict:
    """Paired statistics of the first chunk's and first frame's error against the start image (levels)."""
    pairs = _pair(before["runs"], after["runs"], lambda r: (r["prompt"], r["seed"]), "image-start reports")
    return {metric: paired_stats([b[metric] for b, _ in pairs], [a[metric] for _, a in pairs])
            for metric in ("first_chunk", "first_frame")}


def compare_reports(before: dict, after: dict, before_side: str = "student", after_side: str = "student",
                    names: tuple[str, str] = ("BEFORE", "AFTER")) -> dict:
    """The eval-compare document: paired runs, and the switch and image-start reports both sides have."""
    out = {"before_side": before_side, "after_side": after_side,
           "runs": compare_runs(side_runs(before, before_side, names[0]), side_runs(after, after_side, names[1]))}
    if before_side == after_side == "student":
        for key in ("switch", "switch_cut"):
            if key in before and key in after:
                out[key] = compare_switch(before[key], after[key])
        if "image_start" in before and "image_start" in after:
            out["image_start"] = compare_image_start(before["image_start"], after["image_start"])
    return out


def _fmt(stats: dict, digits: int = 3) -> tuple[str, ...]:
    se = "n/a" if stats["standard_error"] is None else f"{stats['standard_error']:.{digits}f}"
    z = "" if stats["z"] is None else f"{stats['z']:+.1f}"
    return (f"{stats['before']:.{digits}f}", f"{stats['after']:.{digits}f}", f"{stats['difference']:+.{digits}f}",
            se, z, f"{stats['up']}/{stats['down']}/{stats['n']}")


def print_comparison(doc: dict, before_name: str, after_name: str) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 110))
    runs = doc["runs"]
    table = Table(title=f"paired: {after_name} ({doc['after_side']}) - {before_name} ({doc['before_side']}), "
                        f"{runs['overall']['n']} runs", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("", overflow="ellipsis", no_wrap=True, max_width=44)
    for name in ("before", "after", "difference", "std err", "z", "up/down/n"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_row("[bold]overall", *_fmt(runs["overall"]))
    for name, stats in runs["components"].items():
        table.add_row(name, *_fmt(stats))
    for row in runs["per_prompt"]:
        table.add_row(f"[dim]{row['prompt']}", *_fmt(row))
    for key, label in (("switch", "switch"), ("switch_cut", "cut")):
        for metric, stats in doc.get(key, {}).items():
            table.add_row(f"{label}: next chunks, {metric}", *_fmt(stats))
    for metric, stats in doc.get("image_start", {}).items():
        table.add_row(f"image start: {metric} error (levels, lower is better)", *_fmt(stats, 2))
    console.print(table)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval-compare", help="the paired difference between two `framecast eval` reports "
                       "(same prompts and seeds), with standard errors")
    p.add_argument("before", help="eval.json (or the folder holding it) of the model before")
    p.add_argument("after", help="eval.json (or the folder holding it) of the model after")
    p.add_argument("--before-side", default="student", choices=SIDES, help="which runs of BEFORE (default: %(default)s)")
    p.add_argument("--after-side", default="student", choices=SIDES, help="which runs of AFTER (default: %(default)s)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the comparison to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    doc = compare_reports(load_report(args.before), load_report(args.after), args.before_side, args.after_side)
    print_comparison(doc, args.before, args.after)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=1))
    return 0
