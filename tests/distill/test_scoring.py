"""The palette/geometry scorer: ground truth scores high, and it can fail (noise, wrong prompt, static, flicker)."""

import numpy as np
import pytest

from distill.config import ShapesDataConfig
from distill.prompts import BACKGROUND_COLOURS, OBJECT_COLOURS, ObjectGroup, PromptSpec
from distill.scoring import COMPONENTS, WindowScorer, score_video, score_windows, shape_of_fill, shapes_by_kind
from distill.shapes_data import ShapesDataset

FPS = 16


def _samples(size=64, frames=48, n=6, seed=7):
    ds = ShapesDataset(seed, ShapesDataConfig(width=size, height=size, frames=frames))
    return [ds.sample(i) for i in range(n)]


def _wrong_spec(spec: PromptSpec) -> PromptSpec:
    """A prompt sharing neither background nor any object colour with `spec`."""
    used = {g.colour for g in spec.groups} | {spec.background}
    background = next(b for b in BACKGROUND_COLOURS if b not in used)
    colour = next(c for c in OBJECT_COLOURS if c not in used and c != background)
    return PromptSpec(background, (ObjectGroup(1, colour, "triangle", None),), "fast")


@pytest.mark.parametrize("size", [64, 128])
def test_ground_truth_scores_near_one(size):
    for s in _samples(size=size, frames=32 if size == 128 else 48):
        result = score_video(s.video, s.prompt, FPS)
        assert set(result.components) == set(COMPONENTS)
        assert all(0.0 <= v <= 1.0 for v in result.components.values())
        assert result.overall >= 0.85, (s.prompt, result.components)


def test_noise_scores_low():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (48, 64, 64, 3), dtype=np.uint8)
    for s in _samples(n=4):
        assert score_video(noise, s.prompt, FPS).overall <= 0.4


def test_wrong_prompt_scores_low():
    for s in _samples():
        wrong = score_video(s.video, _wrong_spec(s.params.spec), FPS)
        assert wrong.overall <= 0.4, wrong.components


def test_wrong_colour_loses_colours_but_keeps_background():
    s = _samples(n=1)[0]
    spec = s.params.spec
    wrong = PromptSpec(spec.background, (_wrong_spec(spec).groups[0],), spec.speed)
    result = score_video(s.video, wrong, FPS)
    assert result.components["background"] == 1.0
    assert result.components["colours"] < 0.5 and result.components["count"] < 0.5


def test_static_frames_lose_motion():
    for s in _samples(n=3):
        static = np.repeat(s.video[:1], len(s.video), axis=0)
        result = score_video(static, s.prompt, FPS)
        assert result.components["motion"] == 0.0
        assert result.components["colours"] >= 0.9  # only motion is wrong


def test_flicker_loses_the_flicker_component():
    s = _samples(n=1)[0]
    flicker = s.video.astype(np.int16)
    flicker[::2] += 40  # every other frame brighter
    result = score_video(np.clip(flicker, 0, 255).astype(np.uint8), s.prompt, FPS)
    assert result.components["flicker"] == 0.0
    assert score_video(s.video, s.prompt, FPS).components["flicker"] == 1.0


def test_jittery_motion_loses_smoothness():
    s = ShapesDataset(3, ShapesDataConfig(frames=48, max_objects=1)).sample(0)
    shuffled = s.video[np.random.default_rng(0).permutation(len(s.video))]
    assert score_video(shuffled, s.prompt, FPS).components["motion"] < 0.5
    assert score_video(s.video, s.prompt, FPS).components["motion"] >= 0.9


def test_washed_out_colours_lose_saturation():
    s = _samples(n=1)[0]
    grey = s.video.mean(-1, keepdims=True)
    washed = (0.7 * s.video + 0.3 * grey).astype(np.uint8)
    assert score_video(washed, s.prompt, FPS).components["saturation"] < 0.8


def test_shape_classes_follow_the_fill_ratio():
    assert shape_of_fill(0.95) == "circle"
    assert shape_of_fill(2 / np.pi) == "square"
    assert shape_of_fill(0.41) == "triangle"


def test_windows_split_a_long_video_and_show_drift():
    ds = ShapesDataset(1, ShapesDataConfig(frames=16 * 12))  # 12 s
    s = ds.sample(0)
    video = s.video.copy()
    video[16 * 10:] = 255 - video[16 * 10:]  # the last 2 seconds collapse
    windows = score_windows(video, s.prompt, FPS, window_seconds=5)
    assert [(w.start_s, w.end_s) for w in windows] == [(0.0, 5.0), (5.0, 10.0), (10.0, 12.0)]
    assert windows[0].overall >= 0.85 and windows[1].overall >= 0.85
    assert windows[2].overall < 0.5 * windows[0].overall


def test_incremental_scorer_equals_whole_video_scoring():
    s = ShapesDataset(2, ShapesDataConfig(frames=50)).sample(1)
    scorer = WindowScorer(s.prompt, FPS, window_seconds=1.0)
    for start in range(0, 50, 7):  # uneven chunks
        scorer.push(s.video[start:start + 7])
    incremental = scorer.finish()
    whole = score_windows(s.video, s.prompt, FPS, window_seconds=1.0)
    assert len(whole) == 3  # 16 + 16 + 16 frames, the 2-frame tail is dropped
    assert [w.overall for w in incremental] == [w.overall for w in whole]


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="uint8"):
        score_video(np.zeros((4, 8, 8, 3), np.float32), "a red circle on black")
    with pytest.raises(ValueError, match="3 frames"):
        score_video(np.zeros((2, 8, 8, 3), np.uint8), "a red circle on black")


def test_shapes_by_kind_averages_the_prompts_of_one_kind_and_skips_mixed_ones():
    scored = [("a red circle on black", 0.9), ("two blue circles on gray", 0.7), ("a green square on white", 0.2),
              ("a red circle and a blue square on black", 0.0), ("three yellow triangles on navy", 0.1)]
    by_kind = shapes_by_kind(scored)
    assert list(by_kind) == ["circle", "square", "triangle"]
    assert by_kind["circle"] == pytest.approx(0.8) and by_kind["square"] == pytest.approx(0.2)
    assert by_kind["triangle"] == pytest.approx(0.1)
    assert shapes_by_kind([("a red circle on black", 1.0)])["square"] is None
