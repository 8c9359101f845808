"""`framecast eval --switch-at K`: how well a stream follows a prompt switch.

For each prompt A of the file (the next prompt B = the following line, wrapping) and seed, two
streams of `K + N` chunks are generated side by side:
- switched: A for chunks 0..K-1, then `set_prompt(B, transition_chunks, cut)` -- the call the server's
  `session.update` makes (models/generator.py: KV re-cache, the embedding blend, or with `cut` a
  scene cut from an empty cache) -- before chunk K;
- fresh: B from the start, the same seed.

Chunks K..K+N-1 of both are scored against B (`distill.scoring.score_video`), per chunk and as one
clip; the switched / fresh ratio says how much of the new prompt's content the switch reaches
(1.0 = as good as a stream that always had B). "Flicker across the switch" is the jump between the
last frame before chunk K and the first one after: the median over pixels of the mean absolute
RGB difference (0-255 levels, the measure of the `flicker` score component), next to the same
boundary of the fresh stream and to the switched stream's own frame-to-frame change after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from distill.scoring import COMPONENTS, score_video

OBJECT_COMPONENTS = ("colours", "shapes", "count")  # the components about the prompt's objects


def frame_jump(a: np.ndarray, b: np.ndarray) -> float:
    """Median over pixels of the mean |RGB difference| between uint8 frames `a`, `b` `[H, W, 3]`."""
    return float(np.median(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(-1)))


def _steady_jump(frames: np.ndarray) -> float:
    """Median frame-to-frame jump within uint8 `frames [T, H, W, 3]`."""
    return float(np.median([frame_jump(frames[i], frames[i + 1]) for i in range(len(frames) - 1)]))


@dataclass
class _Stream:
    prompt: str  # the prompt the stream opens with
    seed: int
    switch_to: str | None  # the prompt set before chunk `switch_at` (None: a fresh stream)
    before: np.ndarray | None = None  # the last frame before the switch chunk [H, W, 3]
    after: list[np.ndarray] = field(default_factory=list)  # frames of each chunk from the switch on, [T, H, W, 3]


def _generate(gen, streams: list[_Stream], switch_at: int, within: int, transition_chunks: int, cut: bool) -> None:
    """Run every stream for `switch_at + within` chunks (up to `gen.info.max_batch` at once)."""
    for start in range(0, len(streams), gen.info.max_batch):
        group = streams[start:start + gen.info.max_batch]
        states = [gen.open_stream(s.prompt, seed=s.seed) for s in group]
        try:
            for k in range(switch_at + within):
                if k == switch_at:
                    for s, state in zip(group, states):
                        if s.switch_to is not None:
                            gen.set_prompt(state, s.switch_to, transition_chunks=transition_chunks, cut=cut)
                for s, chunk in zip(group, gen.step(states)):
                    if k == switch_at - 1:
                        s.before = chunk.frames[-1]
                    elif k >= switch_at:
                        s.after.append(chunk.frames)
        finally:
            for state in states:
                gen.close_stream(state)


def _scores(video: np.ndarray, prompt: str, fps: int) -> dict:
    result = score_video(video, prompt, fps)
    objects = float(np.mean([result.components[k] for k in OBJECT_COMPONENTS]))
    return {"overall": result.overall, "objects": objects, "components": result.components}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def evaluate_switches(gen, prompts: list[str], seeds: list[int], switch_at: int, within: int,
                      transition_chunks: int = 0, cut: bool = False) -> dict:
    """The `switch` section of eval.json (see the module docstring)."""
    if len(set(prompts)) < 2:
        raise ValueError("the switch report needs at least two different prompts")
    if switch_at < 1 or within < 1:
        raise ValueError("switch_at and within must be at least 1 chunk")
    pairs = [(a, prompts[(i + 1) % len(prompts)]) for i, a in enumerate(prompts)]
    pairs = [(a, b) for a, b in pairs if a != b]
    switched = [_Stream(a, s, b) for a, b in pairs for s in seeds]
    fresh = [_Stream(b, s, None) for _, b in pairs for s in seeds]
    _generate(gen, switched + fresh, switch_at, within, transition_chunks, cut)
    fps = gen.info.fps
    runs = []
    for sw, fr in zip(switched, fresh):
        target = sw.switch_to
        clip_sw, clip_fr = np.concatenate(sw.after), np.concatenate(fr.after)  # [T, H, W, 3]
        run = {
            "from": sw.prompt, "to": target, "seed": sw.seed,
            "switched": _scores(clip_sw, target, fps), "fresh": _scores(clip_fr, target, fps),
            "per_chunk": [{"chunk": switch_at + j, "switched": score_video(a, target, fps).overall,
                           "fresh": score_video(b, target, fps).overall}
                          for j, (a, b) in enumerate(zip(sw.after, fr.after)) if len(a) >= 3],
            "jump": {"switched": frame_jump(sw.before, sw.after[0][0]), "fresh": frame_jump(fr.before, fr.after[0][0]),
                     "steady_after": _steady_jump(clip_sw)},
        }
        run["ratio"] = _ratio(run["switched"]["overall"], run["fresh"]["overall"])
        run["objects_ratio"] = _ratio(run["switched"]["objects"], run["fresh"]["objects"])
        runs.append(run)
    return {"switch_at_chunk": switch_at, "within_chunks": within, "transition_chunks": transition_chunks, "cut": cut,
            "runs": runs, "summary": summarise_switches(runs)}


def summarise_switches(runs: list[dict]) -> dict:
    """Means over runs; ratios are of the means (switched / fresh)."""
    def mean(get):
        values = [get(r) for r in runs]
        return float(np.mean(values)) if values else None

    n_chunks = min((len(r["per_chunk"]) for r in runs), default=0)
    per_chunk = []
    for j in range(n_chunks):
        s, f = mean(lambda r: r["per_chunk"][j]["switched"]), mean(lambda r: r["per_chunk"][j]["fresh"])
        per_chunk.append({"chunk": runs[0]["per_chunk"][j]["chunk"], "switched": s, "fresh": f, "ratio": _ratio(s, f)})
    switched, fresh = mean(lambda r: r["switched"]["overall"]), mean(lambda r: r["fresh"]["overall"])
    obj_s, obj_f = mean(lambda r: r["switched"]["objects"]), mean(lambda r: r["fresh"]["objects"])
    return {
        "switched_overall": switched, "fresh_overall": fresh, "ratio": _ratio(switched, fresh),
        "switched_objects": obj_s, "fresh_objects": obj_f, "objects_ratio": _ratio(obj_s, obj_f),
        "components": {k: _ratio(mean(lambda r: r["switched"]["components"][k]), mean(lambda r: r["fresh"]["components"][k]))
                       for k in COMPONENTS},  # switched / fresh per component
        "per_chunk": per_chunk,
        "jump_switched": mean(lambda r: r["jump"]["switched"]), "jump_fresh": mean(lambda r: r["jump"]["fresh"]),
        "steady_after": mean(lambda r: r["jump"]["steady_after"]),
    }
