"""stream.recache_frames: a re-cache switch that keeps only the newest held frames as the new context."""

import dataclasses

import numpy as np
import pytest
import torch

from models import load_generator
from models.config import apply_overrides, preset


def _generator(recache_frames: int):
    gen = load_generator("tiny", device="cpu", max_batch=2)
    gen.cfg = dataclasses.replace(gen.cfg, stream=dataclasses.replace(gen.cfg.stream, recache_frames=recache_frames))
    return gen


def _steps(gen, stream, n):
    return [gen.step([stream])[0] for _ in range(n)]


def test_the_switch_is_the_resume_of_the_newest_frames_under_the_new_prompt():
    """With recache_frames n, the chunk after a switch is exactly that of a stream resumed (models/resume.py, an
    independent path: the cache rebuilt from saved latents and re-cached) from the old stream's newest n latent
    frames under the new prompt, with the same noise; and not the chunk of the plain re-cache of every frame."""
    gen = _generator(recache_frames=4)  # two chunks: committed one after the other, as they were made
    n = gen.cfg.stream.recache_frames
    s = gen.open_stream("a red circle on black", seed=3)
    _steps(gen, s, 4)  # 8 latent frames: more than the 6 the cache holds
    state = gen.snapshot(s)
    assert state.latents.shape[1] > n
    newest = dataclasses.replace(state, latents=state.latents[:, -n:], latent_frames=n)
    gen.set_prompt(s, "two green triangles on white")
    x_switch = gen.rollout_chunk([s])  # [1, C, c, h, w]
    assert gen.cache.cached_frames(s.row)[:n] == list(range(n))  # the kept frames are the new sink
    gen.close_stream(s)
    resumed = gen.resume_stream("two green triangles on white", newest)
    x_resumed = gen.rollout_chunk([resumed])
    gen.close_stream(resumed)
    assert torch.allclose(x_switch, x_resumed, atol=1e-5)

    plain = _generator(recache_frames=0)
    s = plain.open_stream("a red circle on black", seed=3)
    _steps(plain, s, 4)
    plain.set_prompt(s, "two green triangles on white")
    x_plain = plain.rollout_chunk([s])
    plain.close_stream(s)
    assert not torch.allclose(x_switch, x_plain, atol=1e-3)


def test_a_recache_to_the_same_prompt_keeps_every_frame():
    """Only a switch to another prompt drops frames: set_prompt with the stream's own prompt changes nothing."""
    gen = _generator(recache_frames=2)
    want = gen.open_stream("a red circle on black", seed=5)
    _steps(gen, want, 3)
    expected = _steps(gen, want, 2)
    gen.close_stream(want)
    s = gen.open_stream("a red circle on black", seed=5)
    _steps(gen, s, 3)
    gen.set_prompt(s, "a red circle on black")
    got = _steps(gen, s, 2)
    gen.close_stream(s)
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(expected, got))


def test_the_setting_is_checked():
    with pytest.raises(ValueError, match="recache_frames"):
        apply_overrides(preset("tiny"), {"stream": {"recache_frames": -1}})
    with pytest.raises(ValueError, match="audio clock"):
        apply_overrides(preset("shapes-avatar-untrained"), {"stream": {"recache_frames": 3}})
