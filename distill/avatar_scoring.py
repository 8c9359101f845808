"""Scoring talking-face videos against their audio and start image (no learned metric).

Every evaluated face comes from `distill/avatar_data.py`, so its identity (head, eye and mouth
geometry, colours) is known; the frames are measured, never the generator's internals:

- **mouth opening** per frame: in a box around the mouth's rest position (grown by the idle motion),
  the soft count of pixels whose colour is nearer the mouth interior than the skin and the lips
  (weight d_skin / (d_interior + d_skin)), divided by the interior's area when fully open;
- **lip-sync**: Pearson correlation between the measured opening and the audio's loudness target
  (`opening_from_loudness` of each frame's RMS dB: what the data renders), at frame offsets
  -max_offset..max_offset; the best offset and its correlation. Positive offset = the mouth lags;
- **stillness on silence**: mean |frame-to-frame change| of the opening over silent stretches
  (frames at least `margin` frames from any speech) divided by the same over speech frames;
- **identity** per frame, against the start image: the mean of three similarities in [0, 1] --
  background colour (median of the border), skin colour (median of the head's cheeks) as
  exp(-RGB distance / 30), and the IoU of the skin-coloured region (pixels within 40 of the start
  image's skin colour).

Identity and lip-sync are also reported per window of the stream (`window_slices`), so a score that
decays over a long stream shows where.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distill.avatar_data import MOUTH_INTERIOR, SILENT_DB, Identity, frame_loudness_db, mouth_box, opening_from_loudness

SKIN_TOLERANCE = 40.0  # RGB distance within which a pixel counts as skin
COLOUR_SCALE = 30.0  # RGB distance at which a colour similarity falls to 1/e


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 1e-12 else 0.0


def loudness_target(audio: np.ndarray, samples_per_frame: int) -> tuple[np.ndarray, np.ndarray]:
    """(target opening [T], silent [T] bool) of each video frame's audio."""
    db = frame_loudness_db(audio, samples_per_frame)
    return opening_from_loudness(db), db < SILENT_DB


@dataclass
class LipSync:
    correlation: float  # at the best offset
    offset: int  # frames the mouth lags the audio (best correlation)
    correlation_at_zero: float


def lip_sync(opening: np.ndarray, target: np.ndarray, max_offset: int = 4) -> LipSync:
    """Best correlation of `opening[t]` with `target[t - k]` over k in [-max_offset, max_offset]."""
    best, best_k, at_zero = -2.0, 0, 0.0
    n = len(opening)
    for k in sorted(range(-max_offset, max_offset + 1), key=abs):  # ties (e.g. a still mouth: all 0) -> smallest |k|
        a = opening[max(k, 0):n + min(k, 0)]
        b = target[max(-k, 0):n - max(k, 0)]
        r = pearson(a, b)
        if k == 0:
            at_zero = r
        if r > best:
            best, best_k = r, k
    return LipSync(best, best_k, at_zero)


def stillness_ratio(opening: np.ndarray, silent: np.ndarray, margin: int = 3) -> float | None:
    """Mouth motion on silence / on speech (None when either is absent); `margin` frames around speech
    do not count as silence (the look-ahead and the mouth closing)."""
    speech = ~silent
    near = np.convolve(speech.astype(float), np.ones(2 * margin + 1), mode="same") > 0
    quiet = silent & ~near
    motion = np.abs(np.diff(opening))
    q = quiet[1:] & quiet[:-1]
    s = speech[1:] | speech[:-1]
    if q.sum() < 2 or s.sum() < 2:
        return None
    return float(motion[q].mean() / max(motion[s].mean(), 1e-6))


class FaceMeter:
    """Per-frame measurements of one face (its identity and start image)."""

    def __init__(self, identity: Identity, start_image: np.ndarray, head_motion: float = 1.2):
        self.identity = identity
        h, w = start_image.shape[:2]
        cx, cy = identity.centre
        self.mouth = mouth_box(identity, w, h, head_motion)
        self.full_area = np.pi * identity.mouth_w * 0.8 * max(identity.mouth_h - 0.6, 0.5)
        # cheeks: beside the mouth line, between eyes and mouth, away from both
        ch = (slice(int(cy), int(cy + identity.mouth_y * 0.6)),)
        off = identity.mouth_w + 1
        self.cheeks = [(ch[0], slice(int(cx - off - 4), int(cx - off))), (ch[0], slice(int(cx + off), int(cx + off + 4)))]
        self.start = start_image.astype(np.float32)
        self.start_bg = self._background(self.start)
        self.start_skin = self._skin(self.start)
        self.start_mask = self._skin_mask(self.start, self.start_skin)

    @staticmethod
    def _background(frame: np.ndarray) -> np.ndarray:
        border = np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]])  # [N, 3]
        return np.median(border, axis=0)

    def _skin(self, frame: np.ndarray) -> np.ndarray:
        return np.median(np.concatenate([frame[r, c].reshape(-1, 3) for r, c in self.cheeks]), axis=0)

    @staticmethod
    def _skin_mask(frame: np.ndarray, skin: np.ndarray) -> np.ndarray:
        return np.linalg.norm(frame - skin, axis=-1) < SKIN_TOLERANCE

    def opening(self, frames: np.ndarray) -> np.ndarray:
        """Measured mouth opening [T] of uint8 frames [T, H, W, 3] (about 0 closed, 1 fully open)."""
        box = frames[:, self.mouth[0], self.mouth[1]].astype(np.float32)  # [T, h, w, 3]
        d_in = np.linalg.norm(box - np.asarray(MOUTH_INTERIOR, np.float32), axis=-1)
        d_face = np.minimum(np.linalg.norm(box - np.asarray(self.identity.skin, np.float32), axis=-1),
                            np.linalg.norm(box - np.asarray(self.identity.lips, np.float32), axis=-1))
        weight = d_face / (d_in + d_face + 1e-6)
        weight = np.clip((weight - 0.5) * 2.0, 0.0, 1.0)  # only pixels nearer the interior count
        return weight.sum(axis=(1, 2)) / self.full_area

    def identity_scores(self, frames: np.ndarray) -> np.ndarray:
        """Identity similarity to the start image [T] in [0, 1] (module docstring)."""
        out = np.empty(len(frames))
        for i, frame in enumerate(frames.astype(np.float32)):
            bg = np.exp(-np.linalg.norm(self._background(frame) - self.start_bg) / COLOUR_SCALE)
            skin = self._skin(frame)
            skin_sim = np.exp(-np.linalg.norm(skin - self.start_skin) / COLOUR_SCALE)
            mask = self._skin_mask(frame, self.start_skin)
            union = (mask | self.start_mask).sum()
            iou = (mask & self.start_mask).sum() / union if union else 0.0
            out[i] = (bg + skin_sim + iou) / 3.0
        return out


@dataclass
class AvatarScore:
    lip_sync: float  # best correlation
    offset: int  # frames
    lip_sync_at_zero: float
    stillness: float | None  # motion on silence / on speech
    identity: float  # mean identity similarity
    windows_identity: list[float]  # per window
    windows_lip_sync: list[float | None]  # best correlation within each window (None: silent throughout)
    mouth_by_loudness: list[dict]  # `opening_by_loudness`: how wide the mouth opens, and how steadily, per loudness
    identity_worst_over_first: float  # worst window / first window

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def window_slices(n: int, window_frames: int) -> list[slice]:
    """Consecutive windows of `window_frames` over n frames; a last window under half full is left out (a
    stream shorter than half a window is one window)."""
    out = [slice(s, min(s + window_frames, n)) for s in range(0, n, window_frames)
           if min(s + window_frames, n) - s >= window_frames // 2]
    return out or ([slice(0, n)] if n else [])


def identity_windows(identity: np.ndarray, window_frames: int) -> list[float]:
    """Mean identity per window (`window_slices`)."""
    return [float(identity[w].mean()) for w in window_slices(len(identity), window_frames)]


def lip_sync_windows(opening: np.ndarray, target: np.ndarray, window_frames: int, max_offset: int = 4) -> list[float | None]:
    """Best lip-sync correlation within each window (`window_slices`); None where the audio's target is
    constant there (all silence: nothing to follow)."""
    out: list[float | None] = []
    for w in window_slices(min(len(opening), len(target)), window_frames):
        t = target[w]
        out.append(lip_sync(opening[w], t, max_offset).correlation if len(t) > 2 * max_offset + 2 and t.std() > 1e-6
                   else None)
    return out


LOUDNESS_BINS = (0.0, 0.25, 0.5, 0.75, 1.0)  # bins of the target opening: (0, 0.25], ..., (0.75, 1]


def opening_by_loudness(opening: np.ndarray, target: np.ndarray) -> list[dict]:
    """Per bin of the audio's target opening (`LOUDNESS_BINS`, silence first): {"lo", "hi", "frames", "mean",
    "sd"} of the measured opening. The ground truth opens by a fixed amount per loudness (sd ~0.08); a
    mouth that follows the audio on average but scatters around it (a large sd) loses correlation."""
    bins = [(None, 0.0)] + list(zip(LOUDNESS_BINS[:-1], LOUDNESS_BINS[1:]))
    out = []
    for lo, hi in bins:
        m = target <= hi if lo is None else (target > lo) & (target <= hi)
        x = opening[m]
        out.append({"lo": lo, "hi": hi, "frames": int(m.sum()), "mean": float(x.mean()) if len(x) else None,
                    "sd": float(x.std()) if len(x) > 1 else None})
    return out


def score_avatar(opening: np.ndarray, identity: np.ndarray, audio: np.ndarray, samples_per_frame: int,
                 window_frames: int, max_offset: int = 4) -> AvatarScore:
    """Scores of one stream from its per-frame measurements and its audio (frame 0 = media time 0)."""
    target, silent = loudness_target(audio, samples_per_frame)
    n = min(len(opening), len(target))
    sync = lip_sync(opening[:n], target[:n], max_offset)
    windows = identity_windows(identity, window_frames)
    first = windows[0] if windows else 0.0
    return AvatarScore(
        lip_sync=sync.correlation, offset=sync.offset, lip_sync_at_zero=sync.correlation_at_zero,
        stillness=stillness_ratio(opening[:n], silent[:n]), identity=float(identity.mean()), windows_identity=windows,
        windows_lip_sync=lip_sync_windows(opening[:n], target[:n], window_frames, max_offset),
        mouth_by_loudness=opening_by_loudness(opening[1:n], target[1:n]),  # (frame 0 is the start image)
        identity_worst_over_first=float(min(windows) / first) if first > 0 else 0.0,
    )
