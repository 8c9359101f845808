"""Hue drift over a long stream: does each object keep its colour from the first window to the last?

For every (prompt, seed) run and every object colour its prompt names, the scorer records per
window the share of frames showing a blob of that colour (`presence`) and the median colour of
its pixels (`rgb`, `distill.scoring.VideoScore.objects`). An object *keeps its colour* when, in
the last window, it is still shown in nearly as many frames as in the first
(`presence_last >= presence_first - PRESENCE_SLACK`) and its median colour moved less than
`RGB_TOLERANCE` (RGB euclidean; palette colours are >= ~80 apart, and the scorer names a pixel
within 70 of a palette colour). An object absent from the first window cannot drift and is not
counted (the `colours` component already scores it).

`framecast eval` reports this for every run of two windows or more (e.g. `--seconds 60`).
"""

from __future__ import annotations

import math

PRESENCE_SLACK = 0.2  # the last window may show an object in up to 20 % fewer frames than the first
RGB_TOLERANCE = 35.0  # median colour moved by less than this (RGB euclidean)


def object_drift(first: dict, last: dict) -> dict:
    """One object colour: `first` / `last` are its `objects[colour]` entries of the first / last window."""
    distance = None
    if first["rgb"] is not None and last["rgb"] is not None:
        distance = math.dist(first["rgb"], last["rgb"])
    kept = (last["presence"] >= first["presence"] - PRESENCE_SLACK
            and distance is not None and distance < RGB_TOLERANCE)
    return {"presence_first": first["presence"], "presence_last": last["presence"],
            "rgb_first": first["rgb"], "rgb_last": last["rgb"], "rgb_distance": distance, "kept": kept}


def hue_drift(runs) -> dict | None:
    """Per run and object colour, first vs last window (`EvalRun`s with `.windows`); None when no run
    has two windows. `kept_share` is the share of (run, colour) objects shown in the first window
    that keep their colour to the last."""
    objects = []
    for run in runs:
        if len(run.windows) < 2:
            continue
        first, last = run.windows[0], run.windows[-1]
        for colour, start in first.objects.items():
            if start["presence"] <= 0.0 or colour not in last.objects:
                continue
            objects.append({"prompt": run.prompt, "seed": run.seed, "colour": colour,
                            "first_window": [first.start_s, first.end_s], "last_window": [last.start_s, last.end_s],
                            **object_drift(start, last.objects[colour])})
    if not objects:
        return None
    distances = [o["rgb_distance"] for o in objects if o["rgb_distance"] is not None]
    return {
        "objects": objects,
        "kept_share": sum(o["kept"] for o in objects) / len(objects),
        "mean_presence_first": sum(o["presence_first"] for o in objects) / len(objects),
        "mean_presence_last": sum(o["presence_last"] for o in objects) / len(objects),
        "median_rgb_distance": sorted(distances)[len(distances) // 2] if distances else None,
        "presence_slack": PRESENCE_SLACK,
        "rgb_tolerance": RGB_TOLERANCE,
    }
