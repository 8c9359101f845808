"""Score a shapes video against its prompt with the known palette and geometry (no learned metric).

Every pixel is named by its nearest palette colour (or none, when it is far from all of them);
pixels of each object colour are split into connected blobs per frame. From those:

| component | what it measures (each in [0, 1]) |
|---|---|
| background | share of pixels of the prompt's background colour (>= 60 % counts as full) |
| colours | prompt colours present as blobs, diluted by blobs of colours the prompt does not name |
| shapes | blobs whose geometry (area / pi R^2, R = farthest pixel from the centroid; rotation-free: circle ~0.95, square ~0.65, triangle ~0.43) matches the prompt's shape |
| count | blobs per colour vs the prompt's count, diluted by extra objects |
| motion | tracked centroids move at the prompt's speed (slow / fast) and smoothly (bounces allowed) |
| flicker | frame-to-frame change of the static majority of pixels (median absolute difference) |
| saturation | colour fidelity: the median colour of each object colour's blobs and of the background vs the palette (washed-out or drifting colours lose) |

`overall` is the weighted mean (weights: `EvalConfig.weights`). `score_windows` scores a long
video per window, and `WindowScorer` does the same incrementally while frames are generated.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from distill.config import EvalConfig
from distill.prompts import BACKGROUND_COLOURS, OBJECT_COLOURS, SHAPES, SPEEDS, PromptSpec, parse_prompt

COMPONENTS: tuple[str, ...] = ("background", "colours", "shapes", "count", "motion", "flicker", "saturation")

# palette: every named colour once (white is both an object and a background colour)
_PALETTE_NAMES: tuple[str, ...] = tuple(dict.fromkeys([*OBJECT_COLOURS, *BACKGROUND_COLOURS]))
_PALETTE_RGB = np.array([OBJECT_COLOURS.get(n) or BACKGROUND_COLOURS[n] for n in _PALETTE_NAMES], dtype=np.float32)  # [K, 3]
MATCH_DISTANCE = 70.0  # a pixel further than this (RGB euclidean) from every palette colour is unnamed
BACKGROUND_FULL_SHARE = 0.6  # background share that earns the full background score
MIN_BLOB_SHARE = 0.003  # blobs smaller than this share of the frame are ignored (edges, noise)
# rotation-invariant fill ratio area / (pi R^2) and the class boundaries between shapes
_SHAPE_BOUNDS = ((0.54, "triangle"), (0.79, "square"), (math.inf, "circle"))
_SPEED_TOLERANCE_OCTAVES = 1.0  # measured speed within 2x of the prompt's: full motion score
_COLOUR_DRIFT_SPAN = 50.0  # median colour this far (RGB) from the palette scores 0
_FLICKER_FREE, _FLICKER_SPAN = 1.0, 8.0  # median |frame diff| <= 1 scores 1, >= 9 scores 0


@dataclass(frozen=True)
class VideoScore:
    components: dict[str, float]  # name (COMPONENTS) -> score in [0, 1]
    overall: float  # weighted mean of the components
    # prompt colour -> {"presence": share of frames with a blob of it, "rgb": median [r, g, b] of its pixels or None}
    objects: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class WindowScore:
    index: int  # 0-based window number
    start_s: float  # window start, seconds from the first frame
    end_s: float  # window end (exclusive), seconds
    components: dict[str, float]
    overall: float
    objects: dict[str, dict] = field(default_factory=dict)  # as VideoScore.objects (hue drift: distill/hue_drift.py)


@dataclass
class _Blobs:
    """Connected blobs of one colour over a window of frames (arrays indexed by blob)."""

    frame: np.ndarray  # [N] int frame index
    area: np.ndarray  # [N] float pixel count
    centre: np.ndarray  # [N, 2] float (x, y)
    fill: np.ndarray  # [N] float area / (pi R^2)


@functools.lru_cache(maxsize=1)
def _palette_lookup() -> np.ndarray:
    """Nearest palette index (or -1) for every RGB colour quantised to 6 bits a channel: `[64**3]`."""
    levels = np.arange(64, dtype=np.float32) * 4.0 + 1.5  # bin centres
    best = np.full((64, 64, 64), np.inf, dtype=np.float32)  # [R, G, B] squared distance to the nearest
    nearest = np.full((64, 64, 64), -1, dtype=np.int8)
    for k, (r, g, b) in enumerate(_PALETTE_RGB):
        d2 = ((levels - r) ** 2)[:, None, None] + ((levels - g) ** 2)[None, :, None] + ((levels - b) ** 2)[None, None, :]
        closer = d2 < best
        best[closer], nearest[closer] = d2[closer], k
    nearest[best > MATCH_DISTANCE ** 2] = -1
    nearest = nearest.reshape(-1)
    return nearest


def _label_pixels(video: np.ndarray) -> np.ndarray:
    """Nearest palette index per pixel, -1 where no palette colour is within MATCH_DISTANCE."""
    q = (video >> 2).astype(np.int32)  # [T, H, W, 3] 6-bit channels
    return _palette_lookup()[(q[..., 0] << 12) | (q[..., 1] << 6) | q[..., 2]]  # [T, H, W]


def _find_blobs(mask: np.ndarray, min_area: float) -> _Blobs:
    """Blobs of `mask [T, H, W]`, 4-connected within a frame (never across frames)."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    labels, n = ndimage.label(mask, structure=structure)  # [T, H, W]
    if n == 0:
        return _Blobs(np.zeros(0, int), np.zeros(0), np.zeros((0, 2)), np.zeros(0))
    t, y, x = np.nonzero(labels)
    ids = labels[t, y, x] - 1
    area = np.bincount(ids, minlength=n).astype(np.float64)  # [n]
    cx = np.bincount(ids, x + 0.5, n) / area
    cy = np.bincount(ids, y + 0.5, n) / area
    frame = np.zeros(n, dtype=int)
    frame[ids] = t
    far2 = np.zeros(n)
    np.maximum.at(far2, ids, (x + 0.5 - cx[ids]) ** 2 + (y + 0.5 - cy[ids]) ** 2)
    fill = area / (math.pi * (np.sqrt(far2) + 0.25) ** 2)
    keep = area >= min_area
    return _Blobs(frame[keep], area[keep], np.stack([cx, cy], 1)[keep], fill[keep])


def shape_of_fill(fill: float) -> str:
    """Shape class of a blob from its fill ratio area / (pi R^2)."""
    for bound, shape in _SHAPE_BOUNDS:
        if fill < bound:
            return shape
    return "circle"


def _match_steps(blobs: _Blobs, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Link each blob to its nearest successor (same blob count, similar area, optimal assignment).

    Returns `succ [N]` (index of the blob's match in the next frame, -1 if none) and
    `step [N, 2]` (its displacement to that match in pixels).
    """
    succ = np.full(len(blobs.frame), -1)
    step = np.zeros((len(blobs.frame), 2))
    by_frame = [np.flatnonzero(blobs.frame == t) for t in range(frames)]
    for t in range(frames - 1):
        here, nxt = by_frame[t], by_frame[t + 1]
        if len(here) == 0 or len(here) != len(nxt):
            continue  # objects appeared, vanished or merged: no trustworthy step
        distance = np.linalg.norm(blobs.centre[here][:, None] - blobs.centre[nxt][None], axis=2)  # [n, n]
        rows, cols = linear_sum_assignment(distance)
        ratio = blobs.area[nxt[cols]] / blobs.area[here[rows]]
        ok = (ratio > 0.8) & (ratio < 1.25)  # an occluded blob's centroid jumps
        succ[here[rows[ok]]] = nxt[cols[ok]]
        step[here[rows[ok]]] = blobs.centre[nxt[cols[ok]]] - blobs.centre[here[rows[ok]]]
    return succ, step


def _track_motion(blobs: _Blobs, frames: int, expected_speed: float | None, slow_speed: float) -> float:
    """Speed match x smoothness of one colour's tracked blobs (0 when they cannot be tracked)."""
    succ, step = _match_steps(blobs, frames)
    linked = succ >= 0
    if linked.sum() < 2:
        return 0.0
    speed = float(np.median(np.linalg.norm(step[linked], axis=1)))
    if expected_speed is None:  # the prompt names no speed: any visible motion counts
        speed_score = min(1.0, speed / (0.5 * slow_speed))
    elif speed <= 0.0:
        speed_score = 0.0
    else:
        octaves = abs(math.log2(speed / expected_speed))
        speed_score = float(np.clip(1.0 - (octaves - _SPEED_TOLERANCE_OCTAVES), 0.0, 1.0))
    chained = np.zeros_like(linked)
    chained[linked] = succ[succ[linked]] >= 0  # blobs with two consecutive steps
    if chained.sum() < 1:
        return 0.0
    accel = np.linalg.norm(step[succ[chained]] - step[chained], axis=1)
    smooth_share = float(np.mean(accel <= 0.5 * speed + 0.3))
    smoothness = min(1.0, smooth_share / 0.85)  # wall bounces are sharp: allow 15 % of steps
    return speed_score * smoothness


def _flicker(video: np.ndarray) -> float:
    """1 when the static majority of pixels stays put from frame to frame, 0 when it jumps."""
    frames = video.astype(np.int16)
    diff = np.abs(frames[1:] - frames[:-1]).mean(-1)  # [T-1, H, W]
    median = np.median(diff.reshape(diff.shape[0], -1), axis=1)  # [T-1]
    return float(np.clip(1.0 - (median - _FLICKER_FREE) / _FLICKER_SPAN, 0.0, 1.0).mean())


def _median_rgb(video: np.ndarray, mask: np.ndarray) -> list[float] | None:
    """Median colour [r, g, b] of `mask`'s pixels (None when the mask is empty)."""
    if not mask.any():
        return None
    pixels = video[mask]  # [N, 3]
    return [float(v) for v in np.median(pixels[:: max(1, len(pixels) // 20000)].astype(np.float32), axis=0)]


def _colour_fidelity(video: np.ndarray, mask: np.ndarray, rgb: tuple[int, int, int]) -> float:
    """1 when the median colour of `mask`'s pixels is the palette colour `rgb`, falling to 0 at the drift span."""
    median = _median_rgb(video, mask)
    if median is None:
        return 0.0
    distance = np.linalg.norm(np.asarray(median, np.float32) - np.asarray(rgb, np.float32))
    return float(np.clip(1.0 - distance / _COLOUR_DRIFT_SPAN, 0.0, 1.0))


def _overall(components: dict[str, float], weights: dict[str, float] | None) -> float:
    weights = weights or EvalConfig().weights
    total = sum(weights.get(k, 0.0) for k in components)
    return float(sum(weights.get(k, 0.0) * v for k, v in components.items()) / total)


def score_video(video: np.ndarray, prompt: str | PromptSpec, fps: int = 16,
                weights: dict[str, float] | None = None) -> VideoScore:
    """Score uint8 `video [T, H, W, 3]` (T >= 3) against `prompt` (text or parsed spec)."""
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ValueError(f"video must be uint8 [T, H, W, 3], got {video.dtype} {tuple(video.shape)}")
    T, H, W, _ = video.shape
    if T < 3:
        raise ValueError(f"need at least 3 frames to score motion, got {T}")
    spec = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    if not spec.groups:
        raise ValueError("the prompt names no object to score")
    labels = _label_pixels(video)  # [T, H, W]
    side = min(H, W)
    min_area = max(4.0, MIN_BLOB_SHARE * H * W)

    # background: the prompt's colour, else the most common background colour in the video
    bg_ids = [_PALETTE_NAMES.index(n) for n in BACKGROUND_COLOURS]
    if spec.background is not None:
        bg_id = _PALETTE_NAMES.index(spec.background)
    else:
        bg_id = bg_ids[int(np.argmax([(labels == i).sum() for i in bg_ids]))]
    bg_mask = labels == bg_id  # [T, H, W]
    background = float(np.clip(bg_mask.mean(axis=(1, 2)) / BACKGROUND_FULL_SHARE, 0.0, 1.0).mean())

    # objects: expected count and shapes per colour (groups of one colour merged)
    expected: dict[str, tuple[int, set[str]]] = {}
    for g in spec.groups:
        n, shapes = expected.get(g.colour, (0, set()))
        expected[g.colour] = (n + g.count, shapes | {g.shape})
    n_expected = sum(n for n, _ in expected.values())
    extra_blobs = np.zeros(T)  # [T] blobs of object colours the prompt does not name
    extra_colours = np.zeros(T)  # [T] such colours present
    for name in OBJECT_COLOURS:
        if name in expected or name == spec.background or _PALETTE_NAMES.index(name) == bg_id:
            continue
        per_frame = np.bincount(_find_blobs(labels == _PALETTE_NAMES.index(name), min_area).frame, minlength=T)
        extra_blobs += per_frame
        extra_colours += per_frame > 0

    present, count_scores, shape_scores, motions, fidelity, objects = [], [], [], [], [], {}
    slow = SPEEDS["slow"] * side
    expected_speed = SPEEDS[spec.speed] * side if spec.speed else None
    for colour, (n_want, shapes) in expected.items():
        colour_mask = labels == _PALETTE_NAMES.index(colour)
        blobs = _find_blobs(colour_mask, min_area)
        n_found = np.bincount(blobs.frame, minlength=T)  # [T]
        present.append(n_found > 0)
        count_scores.append(1.0 - np.abs(n_found - n_want) / np.maximum(n_found, n_want))
        matches = np.array([shape_of_fill(f) in shapes for f in blobs.fill], dtype=float)
        shape_scores.append(np.bincount(blobs.frame, matches, T) / np.maximum(n_found, 1))
        motions.append(_track_motion(blobs, T, expected_speed, slow))
        fidelity.append(_colour_fidelity(video, colour_mask, OBJECT_COLOURS[colour]))
        objects[colour] = {"presence": float(np.mean(n_found > 0)), "rgb": _median_rgb(video, colour_mask)}
    fidelity.append(_colour_fidelity(video, bg_mask, BACKGROUND_COLOURS[_PALETTE_NAMES[bg_id]]))

    n_colours = len(expected)
    colours = np.sum(present, axis=0) / (n_colours + extra_colours)  # [T]
    count = np.mean(count_scores, axis=0) * n_expected / (n_expected + extra_blobs)  # [T]
    components = {
        "background": background,
        "colours": float(colours.mean()),
        "shapes": float(np.mean(shape_scores)),
        "count": float(count.mean()),
        "motion": float(np.mean(motions)),
        "flicker": _flicker(video),
        "saturation": float(np.mean(fidelity)),
    }
    return VideoScore(components, _overall(components, weights), objects)


class WindowScorer:
    """Score a stream window by window as frames arrive (never holding more than one window).

    Windows are `round(window_seconds * fps)` frames; at `finish()` a tail shorter than 3 frames
    is dropped (too short to score motion), any longer tail is scored as a short last window.
    """

    def __init__(self, prompt: str | PromptSpec, fps: int, window_seconds: float = EvalConfig.window_seconds,
                 weights: dict[str, float] | None = None):
        self.spec = parse_prompt(prompt) if isinstance(prompt, str) else prompt
        self.fps = int(fps)
        self.window_frames = max(3, int(round(window_seconds * fps)))
        self.weights = weights
        self._pending: list[np.ndarray] = []  # frames of the current window, in order
        self._pending_count = 0
        self._start_frame = 0
        self.windows: list[WindowScore] = []

    def push(self, frames: np.ndarray) -> list[WindowScore]:
        """Add uint8 `frames [T, H, W, 3]`; returns the windows completed by them."""
        done = []
        while len(frames):
            take = min(len(frames), self.window_frames - self._pending_count)
            self._pending.append(frames[:take])
            self._pending_count += take
            frames = frames[take:]
            if self._pending_count == self.window_frames:
                done.append(self._score_pending())
        return done

    def finish(self) -> list[WindowScore]:
        """Score the trailing partial window if it has at least 3 frames; returns all windows."""
        if self._pending_count >= 3:
            self._score_pending()
        self._pending, self._pending_count = [], 0
        return self.windows

    def _score_pending(self) -> WindowScore:
        video = np.concatenate(self._pending, axis=0)
        result = score_video(video, self.spec, self.fps, self.weights)
        end = self._start_frame + len(video)
        window = WindowScore(len(self.windows), self._start_frame / self.fps, end / self.fps,
                             result.components, result.overall, result.objects)
        self.windows.append(window)
        self._pending, self._pending_count, self._start_frame = [], 0, end
        return window


def score_windows(video: np.ndarray, prompt: str | PromptSpec, fps: int,
                  window_seconds: float = EvalConfig.window_seconds,
                  weights: dict[str, float] | None = None) -> list[WindowScore]:
    """Per-window scores of a long uint8 `video [T, H, W, 3]` (drift shows as falling windows)."""
    scorer = WindowScorer(prompt, fps, window_seconds, weights)
    scorer.push(video)
    return scorer.finish()


def shapes_by_kind(scored: list[tuple[str, float]]) -> dict[str, float | None]:
    """Mean `shapes` component per shape word, over (prompt, shapes score) pairs whose prompt names one kind of
    shape only (a prompt of circles and squares says nothing about either); None for a kind no such prompt names.
    Where a model loses one kind (an autoencoder that rounds small triangles into blobs), the overall shapes
    score hides it."""
    picked: dict[str, list[float]] = {kind: [] for kind in SHAPES}
    for prompt, score in scored:
        kinds = {group.shape for group in parse_prompt(prompt).groups}
        if len(kinds) == 1:
            picked[kinds.pop()].append(score)
    return {kind: float(np.mean(scores)) if scores else None for kind, scores in picked.items()}
