"""scripts/vae_shape_ceiling.py: the per-shape scores of clips as an autoencoder returns them. The clips themselves
score their shapes; a decoder that loses the objects' outlines scores what it returns, per shape word."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from scipy import ndimage

from distill.stage_quality import ground_truth_clips

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["a large red circle drifting slowly on a black background", "a large blue square drifting slowly on black",
           "a large yellow triangle drifting slowly on black"]


def _script():
    spec = importlib.util.spec_from_file_location("vae_shape_ceiling", REPO / "scripts" / "vae_shape_ceiling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_clips_score_their_shapes_and_a_blurring_decoder_turns_squares_round():
    ceiling = _script().ceiling
    clips = ground_truth_clips(PROMPTS, [0], 9, 64, 64, 16)
    truth = ceiling(clips, PROMPTS, 16)
    assert truth["shapes_by_kind"]["circle"] == 1.0 and truth["shapes_by_kind"]["square"] == 1.0
    assert truth["overall"] > 0.95
    # a wide blur, thresholded back to the palette's colours: the outline of every object rounded off
    blurred = []
    for clip in clips:
        soft = ndimage.uniform_filter(clip.astype(np.float32), size=(1, 9, 9, 1))
        blurred.append(np.where(soft.max(axis=-1, keepdims=True) > 60, clip.max(axis=(1, 2), keepdims=True), 0)
                       .astype(np.uint8))
    rounded = ceiling(blurred, PROMPTS, 16)
    assert rounded["shapes_by_kind"]["square"] < 0.5  # a rounded square fills its circumcircle like a circle
    assert rounded["components"]["shapes"] < truth["components"]["shapes"]
