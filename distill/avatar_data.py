"""The procedural talking-face dataset of the `shapes-avatar` family.

`AvatarDataset(seed).sample(i, frames)` draws, from a generator seeded by `(seed, i)`:
- an identity: background and skin colours, head size and shape (an ellipse), eye spacing, size
  and colour, mouth width and lip colour -- random per sample, so a model has to take the
  identity from the start image (frame 0) rather than memorise faces;
- speech-like audio: phrases of voiced syllables (a glottal-like harmonic series on a gliding pitch
  contour, shaped by two formant bumps and a raised-cosine loudness envelope) separated by short
  gaps and pauses, after a lead silence, over a faint noise floor;
- the face over time: the mouth opening follows the audio's loudness per video frame
  (`mouth_opening`, the lip-sync target), the eyes blink at random times, the head drifts slowly
  (idle motion of about a pixel).
Everything is closed-form in time, so a longer sample starts with the frames of a shorter one, and
the start image is frame 0 (the mouth closed: every sample starts in silence).

`AvatarSample.params` keeps the ground truth (identity, per-frame mouth opening, head offsets,
silence mask) the avatar scorer (distill/avatar_scoring.py) measures against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from distill.config import AvatarDataConfig

MOUTH_INTERIOR = (40, 10, 20)  # RGB of the open mouth (dark), the same for every face


@dataclass(frozen=True)
class Identity:
    background: tuple[int, int, int]
    skin: tuple[int, int, int]
    eye: tuple[int, int, int]
    lips: tuple[int, int, int]
    centre: tuple[float, float]  # head centre (x, y) in pixels at rest
    head_rx: float
    head_ry: float
    eye_spacing: float  # distance between the eye centres
    eye_y: float  # eye line above the head centre
    eye_r: float
    mouth_y: float  # mouth centre below the head centre
    mouth_w: float  # mouth half-width
    mouth_h: float  # mouth half-height fully open


@dataclass(frozen=True)
class AvatarParams:
    identity: Identity
    opening: np.ndarray  # [T] mouth opening in [0, 1] per video frame (the lip-sync target)
    loudness_db: np.ndarray  # [T] RMS loudness of each frame's audio in dB
    eye_open: np.ndarray  # [T] in [0, 1] (0 = closed: a blink)
    offset: np.ndarray  # [T, 2] head offset (x, y) in pixels
    silent: np.ndarray  # [T] bool: no speech in this frame's audio


@dataclass(frozen=True)
class AvatarSample:
    video: np.ndarray  # [T, H, W, 3] uint8
    audio: np.ndarray  # [T * sample_rate / fps] float32 in [-1, 1], sample 0 = frame 0
    prompt: str
    params: AvatarParams


PROMPT = "a talking face"


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


def _far_colour(rng: np.random.Generator, avoid: list[tuple[int, int, int]], min_dist: float = 90.0) -> tuple[int, int, int]:
    """A random colour at least `min_dist` (RGB distance) from every colour in `avoid`."""
    for _ in range(100):
        c = _colour(rng)
        if all(math.dist(c, a) >= min_dist for a in avoid):
            return c
    return c


def sample_identity(rng: np.random.Generator, cfg: AvatarDataConfig) -> Identity:
    side = min(cfg.width, cfg.height)
    skin = _colour(rng, 60, 250)
    background = _far_colour(rng, [skin, MOUTH_INTERIOR])
    head_rx = side * rng.uniform(0.26, 0.34)
    head_ry = head_rx * rng.uniform(1.05, 1.3)
    return Identity(
        background=background, skin=skin,
        eye=_far_colour(rng, [skin], 110.0), lips=_far_colour(rng, [skin, MOUTH_INTERIOR], 70.0),
        centre=(cfg.width / 2 + rng.uniform(-2, 2), cfg.height / 2 + rng.uniform(-1, 3)),
        head_rx=head_rx, head_ry=head_ry,
        eye_spacing=head_rx * rng.uniform(0.7, 1.05), eye_y=head_ry * rng.uniform(0.22, 0.35),
        eye_r=side * rng.uniform(0.035, 0.055),
        mouth_y=head_ry * rng.uniform(0.42, 0.55), mouth_w=head_rx * rng.uniform(0.35, 0.55),
        mouth_h=side * rng.uniform(0.07, 0.1),
    )


# ---------------------------------------------------------------------------------------------
# speech-like audio
# ---------------------------------------------------------------------------------------------

def _syllable(rng: np.random.Generator, sr: int) -> np.ndarray:
    """One voiced syllable: harmonics of a gliding pitch with two formant bumps, raised-cosine envelope."""
    dur = rng.uniform(0.12, 0.3)
    n = int(dur * sr)
    t = np.arange(n) / sr
    f0 = rng.uniform(90, 240) * (1 + rng.uniform(-0.25, 0.25) * t / dur)  # [n] gliding pitch
    phase = 2 * np.pi * np.cumsum(f0) / sr
    formants = rng.uniform(300, 900), rng.uniform(1000, 2500)
    wave = np.zeros(n)
    for k in range(1, 25):
        fk = k * f0.mean()
        if fk > sr / 2 - 500:
            break
        gain = sum(np.exp(-((fk - f) / 250.0) ** 2) for f in formants) + 0.05
        wave += gain / k**0.5 * np.sin(k * phase)
    env = np.sin(np.pi * np.clip(t / dur, 0, 1)) ** rng.uniform(0.6, 1.5)
    wave = wave / (np.abs(wave).max() + 1e-9)
    return (wave * env * rng.uniform(0.3, 0.8)).astype(np.float32)


def synth_speech(rng: np.random.Generator, seconds: float, cfg: AvatarDataConfig) -> np.ndarray:
    """Speech-like audio of `seconds`: lead silence, then phrases of syllables and pauses."""
    sr = cfg.sample_rate
    total = int(round(seconds * sr))
    out = np.zeros(total + sr, dtype=np.float32)
    pos = int(rng.uniform(*cfg.lead_silence) * sr)
    while pos < total:
        for _ in range(int(rng.integers(cfg.phrase_syllables[0], cfg.phrase_syllables[1] + 1))):
            syl = _syllable(rng, sr)
            end = min(pos + len(syl), len(out))
            out[pos:end] += syl[:end - pos]
            pos = end + int(rng.uniform(0.02, 0.09) * sr)
            if pos >= total:
                break
        pos += int(rng.uniform(*cfg.pause) * sr)
    noise = rng.standard_normal(len(out)).astype(np.float32) * rng.uniform(0.0, 0.002)
    return np.clip(out + noise, -1, 1)[:total]


def frame_loudness_db(audio: np.ndarray, samples_per_frame: int) -> np.ndarray:
    """RMS loudness in dB of each video frame's samples [T]."""
    frames = len(audio) // samples_per_frame
    x = audio[:frames * samples_per_frame].reshape(frames, samples_per_frame).astype(np.float64)
    return 20 * np.log10(np.sqrt((x * x).mean(1)) + 1e-6)


def opening_from_loudness(db: np.ndarray) -> np.ndarray:
    """Mouth opening in [0, 1] from frame loudness: closed below -40 dB, fully open at -12 dB."""
    return np.clip((db + 40.0) / 28.0, 0.0, 1.0)


SILENT_DB = -40.0  # frames quieter than this are silence (the mouth is closed)


# ---------------------------------------------------------------------------------------------
# the face over time
# ---------------------------------------------------------------------------------------------

def _blinks(rng: np.random.Generator, frames: int, cfg: AvatarDataConfig) -> np.ndarray:
    """Eye openness [T]: 1, dipping to 0 for ~3 frames at random times."""
    eye = np.ones(frames)
    t = rng.uniform(*cfg.blink_every) * cfg.fps
    shape = np.array([0.5, 0.0, 0.5])
    while t < frames:
        start = int(t)
        seg = eye[start:start + 3]
        eye[start:start + 3] = np.minimum(seg, shape[:len(seg)])
        t += rng.uniform(*cfg.blink_every) * cfg.fps
    return eye


def _head_motion(rng: np.random.Generator, frames: int, cfg: AvatarDataConfig) -> np.ndarray:
    """Head offset [T, 2]: two slow sinusoids per axis, amplitude about `head_motion` pixels."""
    t = np.arange(frames) / cfg.fps
    out = np.zeros((frames, 2))
    for axis in range(2):
        for _ in range(2):
            f, ph = rng.uniform(0.1, 0.4), rng.uniform(0, 2 * np.pi)
            out[:, axis] += cfg.head_motion / 2 * (np.sin(2 * np.pi * f * t + ph) - np.sin(ph))
    return out


def _ellipse_alpha(x: np.ndarray, y: np.ndarray, cx, cy, rx, ry) -> np.ndarray:
    """Anti-aliased coverage of an ellipse: x [1, 1, W], y [1, H, 1], centres / radii [T, 1, 1] -> [T, H, W]."""
    rx, ry = np.maximum(rx, 1e-3), np.maximum(ry, 1e-3)
    r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return np.clip(0.5 - (r - 1.0) * np.minimum(rx, ry), 0.0, 1.0)


def render_face(identity: Identity, opening: np.ndarray, eye_open: np.ndarray, offset: np.ndarray,
                width: int, height: int) -> np.ndarray:
    """uint8 video [T, H, W, 3] of the face with per-frame mouth opening, eye openness and head offset."""
    T = len(opening)
    x = (np.arange(width) + 0.5)[None, None, :]
    y = (np.arange(height) + 0.5)[:, None][None]
    cx = (identity.centre[0] + offset[:, 0])[:, None, None]  # [T, 1, 1]
    cy = (identity.centre[1] + offset[:, 1])[:, None, None]
    video = np.empty((T, height, width, 3), dtype=np.float32)
    video[:] = np.asarray(identity.background, np.float32)

    def paint(alpha, colour):
        video[:] = video + alpha[..., None] * (np.asarray(colour, np.float32) - video)

    one = np.ones((T, 1, 1))
    paint(_ellipse_alpha(x, y, cx, cy, identity.head_rx * one, identity.head_ry * one), identity.skin)
    eye_ry = identity.eye_r * eye_open[:, None, None]
    for side in (-1, 1):
        ex = cx + side * identity.eye_spacing / 2
        alpha = _ellipse_alpha(x, y, ex, cy - identity.eye_y, identity.eye_r * one, eye_ry)
        paint(alpha * (eye_open[:, None, None] > 0.05), identity.eye)
    my = cy + identity.mouth_y
    open_h = identity.mouth_h * opening[:, None, None]
    paint(_ellipse_alpha(x, y, cx, my, identity.mouth_w * one, 0.9 + open_h), identity.lips)
    inner = _ellipse_alpha(x, y, cx, my, identity.mouth_w * 0.8 * one, np.maximum(open_h - 0.6, 0))
    paint(inner * (open_h > 0.6), MOUTH_INTERIOR)
    return np.rint(np.clip(video, 0, 255)).astype(np.uint8)


MOUTH_MARGIN = 2.0  # pixels around the mouth's box besides the head motion (the lips' edge and anti-aliasing)


def mouth_box(identity: Identity, width: int, height: int, head_motion: float) -> tuple[slice, slice]:
    """(rows, columns) of the pixels the mouth can cover: its box fully open at rest, grown by the idle
    `head_motion` and MOUTH_MARGIN pixels, clipped to a `width` x `height` canvas."""
    cx, cy = identity.centre
    my = cy + identity.mouth_y
    pad = head_motion + MOUTH_MARGIN
    return (slice(max(0, int(my - identity.mouth_h - pad)), min(height, int(np.ceil(my + identity.mouth_h + pad)))),
            slice(max(0, int(cx - identity.mouth_w - pad)), min(width, int(np.ceil(cx + identity.mouth_w + pad)))))


class AvatarDataset:
    """Deterministic talking faces: `sample(i, frames)` depends only on `(seed, i)` and the config."""

    def __init__(self, seed: int = 0, config: AvatarDataConfig | None = None):
        self.seed = int(seed)
        self.config = config or AvatarDataConfig()
        if self.config.sample_rate % self.config.fps:
            raise ValueError("sample_rate must be a multiple of fps")

    @property
    def samples_per_frame(self) -> int:
        return self.config.sample_rate // self.config.fps

    def identity(self, index: int) -> Identity:
        return sample_identity(np.random.default_rng([self.seed, int(index), 0]), self.config)

    def sample(self, index: int, frames: int | None = None, audio: np.ndarray | None = None) -> AvatarSample:
        """Sample `index` with `frames` frames; `audio` (float32 at the sample rate) replaces its speech."""
        cfg = self.config
        frames = frames or cfg.frames
        identity = self.identity(index)
        if audio is None:
            # the speech of a long sample is drawn once at a fixed length, so shorter samples are its prefix
            speech_rng = np.random.default_rng([self.seed, int(index), 1])
            seconds = max(frames / cfg.fps, 8.0)
            audio = synth_speech(speech_rng, seconds, cfg)
        spf = self.samples_per_frame
        audio = np.pad(audio, (0, max(0, frames * spf - len(audio))))[:frames * spf].astype(np.float32)
        db = frame_loudness_db(audio, spf)
        opening = opening_from_loudness(db)
        motion_rng = np.random.default_rng([self.seed, int(index), 2])
        eye = _blinks(motion_rng, max(frames, 8 * cfg.fps), cfg)[:frames]
        offset = _head_motion(motion_rng, max(frames, 8 * cfg.fps), cfg)[:frames]
        video = render_face(identity, opening, eye, offset, cfg.width, cfg.height)
        params = AvatarParams(identity, opening, db, eye, offset, db < SILENT_DB)
        return AvatarSample(video, audio, PROMPT, params)
