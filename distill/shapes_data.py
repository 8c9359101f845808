"""The procedural `shapes` video dataset: coloured shapes bouncing on a plain background.

`ShapesDataset(seed).sample(i)` draws a background, 1-3 objects (circle / square / triangle, named
colours, sizes, one speed per video) and their trajectories from a generator seeded by
`(seed, i)`, renders the video with numpy (anti-aliased, vectorised over frames) and words a prompt
for it. The same `(seed, i)` always gives the same video, prompt and parameters, at any length:
trajectories are closed-form, so a longer sample starts with the frames of a shorter one.
`sample_for_prompt(prompt)` renders a ground-truth video for any prompt in the shapes vocabulary
(the scorer's reference and an oracle "model" for evaluation tests).

`ShapesVideoDataset` / `ShapesVideoStream` adapt it to torch for training: (video float
`[3, T, H, W]` in [-1, 1], prompt).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from distill.config import ShapesDataConfig
from distill.prompts import (
    BACKGROUND_COLOURS,
    OBJECT_COLOURS,
    SHAPES,
    SIZES,
    SPEEDS,
    ObjectGroup,
    PromptSpec,
    parse_prompt,
    render_prompt,
)


@dataclass(frozen=True)
class ObjectParams:
    """One object and its trajectory (pixel units, origin at the top-left corner)."""

    shape: str  # "circle" | "square" | "triangle"
    colour: str  # key of OBJECT_COLOURS
    size: str  # key of SIZES
    speed: str  # key of SPEEDS
    radius: float  # circumradius in pixels
    centres: np.ndarray  # [T, 2] float (x, y) centre per frame
    angles: np.ndarray  # [T] float rotation in radians per frame


@dataclass(frozen=True)
class VideoParams:
    """Everything a shapes video is rendered from (its ground truth)."""

    background: str  # key of BACKGROUND_COLOURS
    objects: tuple[ObjectParams, ...]  # drawn in order: later objects occlude earlier ones
    width: int
    height: int
    fps: int
    frames: int
    spec: PromptSpec  # what the prompt says (sizes the wording left out are None)


@dataclass(frozen=True)
class ShapesSample:
    video: np.ndarray  # [T, H, W, 3] uint8
    prompt: str
    params: VideoParams


# ---------------------------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------------------------

_PLACEMENT_ATTEMPTS = 20  # tries to start an object clear of the others


def bounce(start: float, velocity: float, lo: float, hi: float, t: np.ndarray) -> np.ndarray:
    """Position at times `t` of a point moving at `velocity` and reflecting off `lo` and `hi`."""
    span = hi - lo
    unfolded = np.mod(start - lo + velocity * t, 2.0 * span)  # [T] in [0, 2*span)
    return lo + span - np.abs(unfolded - span)


def sample_spec(rng: np.random.Generator, cfg: ShapesDataConfig) -> tuple[PromptSpec, tuple[str, ...]]:
    """Draw what a video shows: background, object groups (one colour each) and speed.

    Returns the spec as the prompt will say it (a size may be left unsaid) and the size drawn
    for each group.
    """
    background = str(rng.choice(list(BACKGROUND_COLOURS)))
    speed = str(rng.choice(list(SPEEDS)))
    n_objects = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    palette = rng.permutation([c for c in OBJECT_COLOURS if c != background])  # each group its own colour
    groups: list[ObjectGroup] = []
    sizes: list[str] = []
    remaining = n_objects
    while remaining > 0:
        count = 1 if rng.random() < 0.6 else int(rng.integers(1, remaining + 1))
        sizes.append(str(rng.choice(list(SIZES))))
        said_size = None if rng.random() < cfg.omit_size_prob else sizes[-1]
        groups.append(ObjectGroup(count, str(palette[len(groups)]), str(rng.choice(SHAPES)), said_size))
        remaining -= count
    return PromptSpec(background=background, groups=tuple(groups), speed=speed), tuple(sizes)


def place_objects(spec: PromptSpec, rng: np.random.Generator, cfg: ShapesDataConfig, frames: int,
                  sizes: tuple[str, ...] | None = None) -> VideoParams:
    """Trajectories of `frames` frames for the objects of `spec`.

    `sizes` gives each group's drawn size; where it and the spec are silent, a size is drawn, and
    a missing background or speed is drawn too (so any parsed prompt can be rendered).
    """
    background = spec.background or str(rng.choice([b for b in BACKGROUND_COLOURS
                                                       if b not in {g.colour for g in spec.groups}]))
    speed = spec.speed or str(rng.choice(list(SPEEDS)))
    side = min(cfg.width, cfg.height)
    t = np.arange(frames, dtype=np.float64)  # [T]
    objects = []
    starts: list[tuple[float, float, float]] = []  # (x, y, radius) of the objects placed so far
    for i, group in enumerate(spec.groups):
        drawn_size = sizes[i] if sizes else (group.size or str(rng.choice(list(SIZES))))
        for _ in range(group.count):
            radius = SIZES[drawn_size] * side
            for _attempt in range(_PLACEMENT_ATTEMPTS):  # start apart; they may still cross later
                x0, y0 = rng.uniform(radius, cfg.width - radius), rng.uniform(radius, cfg.height - radius)
                if all(math.hypot(x0 - x, y0 - y) > radius + r for x, y, r in starts):
                    break
            starts.append((x0, y0, radius))
            pixels_per_frame = SPEEDS[speed] * side * rng.uniform(0.85, 1.15)
            heading = rng.uniform(0.0, 2.0 * math.pi)
            vx, vy = pixels_per_frame * math.cos(heading), pixels_per_frame * math.sin(heading)
            spin = rng.uniform(0.02, 0.07) * rng.choice([-1.0, 1.0]) if cfg.rotation and group.shape != "circle" else 0.0
            angle0 = rng.uniform(0.0, 2.0 * math.pi) if cfg.rotation else 0.0
            centres = np.stack([bounce(x0, vx, radius, cfg.width - radius, t),
                                bounce(y0, vy, radius, cfg.height - radius, t)], axis=1)  # [T, 2]
            objects.append(ObjectParams(group.shape, group.colour, drawn_size, speed, radius, centres, angle0 + spin * t))
    return VideoParams(background, tuple(objects), cfg.width, cfg.height, cfg.fps, frames, spec)


# ---------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------

# shape -> (number of edges, apothem / circumradius); circles have no edges
_POLYGONS = {"square": (4, 1.0 / math.sqrt(2.0)), "triangle": (3, 0.5)}


def _signed_distance(shape: str, radius: float, dx: np.ndarray, dy: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Signed distance (pixels, negative inside) of points `dx [T,1,W], dy [T,H,1]` from the shape.

    Polygons use the max over edges of the distance to each edge's line (exact inside and along
    edges, which is what anti-aliasing needs). Returns `[T, H, W]`.
    """
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - radius
    edges, apothem_ratio = _POLYGONS[shape]
    dist = None
    for k in range(edges):
        normal = angles + math.pi / 2 + 2.0 * math.pi * k / edges  # [T]; k=0 edge at the bottom
        cos, sin = np.cos(normal)[:, None, None], np.sin(normal)[:, None, None]
        d = dx * cos + dy * sin  # [T, H, W]
        dist = d if dist is None else np.maximum(dist, d)
    return dist - apothem_ratio * radius


def render_video(params: VideoParams) -> np.ndarray:
    """Render `params` to uint8 `[T, H, W, 3]`, each object drawn in a moving window around it."""
    T, H, W = params.frames, params.height, params.width
    video = np.empty((T, H, W, 3), dtype=np.float32)
    video[:] = np.asarray(BACKGROUND_COLOURS[params.background], dtype=np.float32)
    frame_index = np.arange(T)[:, None, None]  # [T, 1, 1]
    for obj in params.objects:
        win = min(int(math.ceil(2.0 * obj.radius)) + 3, H, W)  # window side covering the shape + AA
        cx, cy = obj.centres[:, 0], obj.centres[:, 1]  # [T]
        left = np.clip(np.floor(cx - win / 2.0).astype(np.int64), 0, W - win)  # [T]
        top = np.clip(np.floor(cy - win / 2.0).astype(np.int64), 0, H - win)  # [T]
        cols = left[:, None] + np.arange(win)  # [T, win]
        rows = top[:, None] + np.arange(win)  # [T, win]
        dx = (cols + 0.5 - cx[:, None])[:, None, :].astype(np.float32)  # [T, 1, win]
        dy = (rows + 0.5 - cy[:, None])[:, :, None].astype(np.float32)  # [T, win, 1]
        alpha = np.clip(0.5 - _signed_distance(obj.shape, obj.radius, dx, dy, obj.angles.astype(np.float32)), 0.0, 1.0)
        index = (frame_index, rows[:, :, None], cols[:, None, :])  # -> [T, win, win]
        patch = video[index]  # [T, win, win, 3]
        colour = np.asarray(OBJECT_COLOURS[obj.colour], dtype=np.float32)
        video[index] = patch + alpha[..., None] * (colour - patch)
    return np.rint(video).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------

class ShapesDataset:
    """Deterministic procedural videos: `sample(i)` depends only on `(seed, i)` and the config."""

    def __init__(self, seed: int = 0, config: ShapesDataConfig | None = None):
        self.seed = int(seed)
        self.config = config or ShapesDataConfig()
        if self.config.min_objects < 1 or self.config.max_objects < self.config.min_objects:
            raise ValueError("need 1 <= min_objects <= max_objects")

    def params(self, index: int, frames: int | None = None) -> VideoParams:
        rng = np.random.default_rng([self.seed, int(index)])
        spec, sizes = sample_spec(rng, self.config)
        return place_objects(spec, rng, self.config, frames or self.config.frames, sizes)

    def sample(self, index: int, frames: int | None = None) -> ShapesSample:
        """Sample `index` with `frames` frames (default: the config's)."""
        params = self.params(index, frames)
        wording_rng = np.random.default_rng([self.seed, int(index), 1])
        return ShapesSample(render_video(params), render_prompt(params.spec, wording_rng), params)

    def sample_for_prompt(self, prompt: str | PromptSpec, index: int = 0, frames: int | None = None) -> ShapesSample:
        """A ground-truth video of `prompt` (text in the shapes vocabulary, or a parsed spec).

        Deterministic per `(seed, index, prompt)`; raises `PromptParseError` for a prompt naming no object.
        """
        spec = parse_prompt(prompt) if isinstance(prompt, str) else prompt
        text = prompt if isinstance(prompt, str) else render_prompt(spec, np.random.default_rng([self.seed, int(index), 1]))
        digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        rng = np.random.default_rng([self.seed, int(index), 2, digest])
        params = place_objects(spec, rng, self.config, frames or self.config.frames)
        return ShapesSample(render_video(params), text, params)


class StartImages:
    """Start images for the prompts `prompt_list("shapes", n, seed)` draws: `images(i, j)` is frame j
    (uint8 `[H, W, 3]`) of sample i's clip, the video whose prompt is prompt i (Self-Forcing's
    start-image rollouts; j < `frames`, the dataset's clip length)."""

    def __init__(self, seed: int, config: ShapesDataConfig | None = None):
        self.shapes = ShapesDataset(seed, config)
        self.frames = self.shapes.config.frames

    def __call__(self, index: int, frame: int) -> np.ndarray:
        return self.shapes.sample(index, frames=frame + 1).video[frame]  # trajectories are closed-form


def to_model_video(video: np.ndarray) -> torch.Tensor:
    """uint8 `[T, H, W, 3]` -> float `[3, T, H, W]` in [-1, 1] (the VAE's input range)."""
    return torch.from_numpy(video).permute(3, 0, 1, 2).float().div_(127.5).sub_(1.0)


class ShapesVideoDataset(torch.utils.data.Dataset):
    """Map-style torch view of the first `length` samples: `(video [3, T, H, W] in [-1, 1], prompt)`."""

    def __init__(self, length: int, seed: int = 0, config: ShapesDataConfig | None = None):
        self.length = int(length)
        self.shapes = ShapesDataset(seed, config)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        sample = self.shapes.sample(index)
        return to_model_video(sample.video), sample.prompt


class ShapesVideoStream(torch.utils.data.IterableDataset):
    """Endless torch stream of samples `start, start+1, ...`; DataLoader workers take disjoint indices."""

    def __init__(self, seed: int = 0, config: ShapesDataConfig | None = None, start: int = 0):
        self.shapes = ShapesDataset(seed, config)
        self.start = int(start)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        index = self.start + worker
        while True:
            sample = self.shapes.sample(index)
            yield to_model_video(sample.video), sample.prompt
            index += workers
