"""Resuming a stream from a saved ResumeState gives exactly the frames of the uninterrupted stream."""

import numpy as np
import pytest

from models import load_generator
from models.resume import ResumeState


@pytest.fixture(scope="module")
def gen():
    return load_generator("tiny", device="cpu", max_batch=2)


def _frames(gen, stream, n):
    return [gen.step([stream])[0] for _ in range(n)]


def test_resume_equals_uninterrupted_stream_with_a_prompt_switch(gen, tmp_path):
    before = 4  # 8 latent frames: past the tiny cache's 2 sink + 4 window slots, so the ring has wrapped
    whole = gen.open_stream("a red ball", seed=5)
    _frames(gen, whole, before)
    gen.set_prompt(whole, "a green square")
    expected = _frames(gen, whole, 2)
    gen.close_stream(whole)

    first = gen.open_stream("a red ball", seed=5)
    _frames(gen, first, before)
    path = ResumeState(**vars(gen.snapshot(first))).save(tmp_path / "state.safetensors")
    gen.close_stream(first)
    # another stream runs on the freed row in between: nothing of it may leak into the continuation
    other = gen.open_stream("noise", seed=9)
    _frames(gen, other, 1)
    gen.close_stream(other)

    resumed = gen.resume_stream("a green square", ResumeState.load(path))
    got = _frames(gen, resumed, 2)
    gen.close_stream(resumed)
    for want, have in zip(expected, got):
        assert (have.index, have.first_frame_index, have.prompt) == (want.index, want.first_frame_index, want.prompt)
        np.testing.assert_array_equal(have.frames, want.frames)


def test_snapshot_needs_a_chunk(gen):
    stream = gen.open_stream("x", seed=1)
    try:
        with pytest.raises(ValueError):
            gen.snapshot(stream)
    finally:
        gen.close_stream(stream)


def test_context_state_continues_a_foreign_clip(gen):
    info, tc = gen.info, gen.vae.temporal_compression
    clip = np.random.default_rng(0).integers(0, 255, (30, info.height, info.width, 3), dtype=np.uint8)
    state = gen.context_state(clip, seed=3, prompt="a ball")
    assert state.latent_frames == min(gen.cache.slots, 1 + (30 - 1) // tc)
    assert state.latents.shape[1] == state.latent_frames and state.frames_emitted == 30
    stream = gen.resume_stream("a ball", state)
    chunk = gen.step([stream])[0]
    gen.close_stream(stream)
    assert chunk.first_frame_index == 30
    assert chunk.frames.shape == (tc * info.chunk_frames, info.height, info.width, 3)  # not a first chunk
    with pytest.raises(ValueError):
        gen.context_state(clip[:, :32], seed=3)  # wrong size
    short = gen.resume_stream("a ball", gen.context_state(clip[:2], seed=3))  # under one latent frame's worth
    assert gen.step([short])[0].first_frame_index == 2
    gen.close_stream(short)


def test_resume_under_context_noise_keeps_the_start_image_clean_and_equals_the_uninterrupted_stream(tmp_path):
    """With stream.context_noise the re-cache of a resume draws its noise where the uninterrupted stream's
    prompt switch does (the saved generator state) and keeps a start image (frame 0) clean, as the saved
    state says it was committed, so the continuation is the same frames."""
    import dataclasses

    gen = load_generator("tiny", device="cpu", max_batch=2)
    gen.cfg = dataclasses.replace(gen.cfg, stream=dataclasses.replace(gen.cfg.stream, context_noise=0.3))
    img = np.full((gen.cfg.stream.height, gen.cfg.stream.width, 3), 120, np.uint8)
    img[10:30, 10:40] = (200, 30, 30)
    before = 2  # frame 0 (the image) is still in the sink

    whole = gen.open_stream("a red ball", seed=4, image=img)
    _frames(gen, whole, before)
    gen.set_prompt(whole, "a green square")
    expected = _frames(gen, whole, 2)
    gen.close_stream(whole)

    first = gen.open_stream("a red ball", seed=4, image=img)
    _frames(gen, first, before)
    state = gen.snapshot(first)
    assert state.image_sink
    path = state.save(tmp_path / "state.safetensors")
    gen.close_stream(first)
    loaded = ResumeState.load(path)
    assert loaded.image_sink
    resumed = gen.resume_stream("a green square", loaded)
    got = _frames(gen, resumed, 2)
    gen.close_stream(resumed)
    for want, have in zip(expected, got):
        np.testing.assert_array_equal(have.frames, want.frames)


def test_after_a_cut_the_new_frame_0_is_not_taken_for_the_start_image():
    """A cut forgets the start image: the snapshot of a stream cut after an image start holds no image sink,
    so a resume (and any later re-cache) treats the new frame 0 as a generated frame, not a clean image."""
    gen = load_generator("tiny", device="cpu", max_batch=1)
    img = np.full((gen.cfg.stream.height, gen.cfg.stream.width, 3), 120, np.uint8)
    s = gen.open_stream("a red ball", seed=4, image=img)
    _frames(gen, s, 2)
    assert gen.snapshot(s).image_sink
    gen.set_prompt(s, "a green square", cut=True)
    _frames(gen, s, 1)
    assert s.sink_latent is None and not gen.snapshot(s).image_sink
    gen.close_stream(s)
