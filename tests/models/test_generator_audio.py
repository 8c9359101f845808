"""Avatar streams: per-chunk audio through `step(streams, inputs)` (the contract in models/audio.py)."""

import numpy as np
import pytest

from models import load_generator
from models.audio import float_to_pcm_s16le
from models.config import apply_overrides, preset
from models.generator import StreamingGenerator
from models.model_dir import random_transformer, random_vae
from models.stream_api import ChunkInput, Conditioning
from models.text_encoders import build_text_encoder

SR = 16000
FACE = np.full((32, 32, 3), 120, np.uint8)


@pytest.fixture(scope="module")
def gen():
    """tiny-avatar at 32x32 (random weights): the audio path at the least decoding cost."""
    cfg = apply_overrides(preset("tiny-avatar"), {"stream": {"width": 32, "height": 32}})
    return StreamingGenerator(cfg, random_transformer(cfg), random_vae(cfg), build_text_encoder(cfg.text_encoder),
                              max_batch=2)


def speech(seconds, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * 180 * t) * (rng.random() + np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)


def run(gen, feeds, chunks=2, seed=1):
    """feeds[k]: list of (media_time_us, float samples) given with chunk k."""
    s = gen.open(Conditioning("a talking face", seed=seed, image=FACE, inputs=("audio",)))
    try:
        out = []
        for k in range(chunks):
            pieces = [ChunkInput("audio", t, float_to_pcm_s16le(x)) for t, x in feeds.get(k, [])]
            out.append(gen.step([s], [pieces])[0].frames)
        return np.concatenate(out).astype(np.int16)
    finally:
        gen.close_stream(s)


def test_an_audio_model_declares_its_input_and_rate(gen):
    assert gen.info.inputs == ("audio",) and gen.info.audio_sample_rate == SR and gen.info.audio_lookahead_frames == 2
    assert load_generator("tiny", device="cpu", max_batch=1).info.inputs == ()


def test_audio_changes_the_frames_and_missing_audio_is_silence(gen):
    voice = speech(2.0)
    silent = run(gen, {})
    assert np.array_equal(silent, run(gen, {0: [(0, np.zeros(SR * 2, np.float32))]}))
    spoken = run(gen, {0: [(0, voice)]})
    assert np.abs(spoken - silent).max() > 10


def test_pieces_split_anywhere_and_sent_late_equal_one_piece(gen):
    voice = speech(2.0, seed=3)
    whole = run(gen, {0: [(0, voice)]})
    cut = [0, 777, 5000, 11000, 32000]
    pieces = [(a * 1_000_000 // SR, voice[a:b]) for a, b in zip(cut, cut[1:])]
    # every piece arrives before the chunk that first reads it (chunk 0 reads up to 11 frames = 11000 samples)
    assert np.array_equal(whole, run(gen, {0: pieces[:3][::-1], 1: pieces[3:]}))
    # audio that arrives only after its chunk was made is silence for that chunk
    late = run(gen, {1: [(0, voice)]})
    assert not np.array_equal(late[:9], whole[:9])


def test_audio_until_us_follows_the_chunks(gen):
    s = gen.open(Conditioning("face", seed=0, image=FACE, inputs=("audio",)))
    try:
        # chunk of 2 latent frames after the image: frames 1..8 plus a 2-frame look-ahead -> frame 11 at 16 fps
        assert gen.audio_until_us(s) == 11 * 1_000_000 // 16
        gen.step([s], [[]])
        assert gen.audio_until_us(s) == 19 * 1_000_000 // 16
    finally:
        gen.close_stream(s)


def test_undeclared_or_malformed_audio_is_refused(gen):
    s = gen.open(Conditioning("face", seed=0, image=FACE))
    try:
        with pytest.raises(ValueError, match="did not declare"):
            gen.step([s], [[ChunkInput("audio", 0, b"\x00\x00")]])
    finally:
        gen.close_stream(s)
    s = gen.open(Conditioning("face", seed=0, image=FACE, inputs=("audio",)))
    try:
        with pytest.raises(ValueError, match="even number"):
            gen.step([s], [[ChunkInput("audio", 0, b"\x00\x00\x01")]])
    finally:
        gen.close_stream(s)
    with pytest.raises(ValueError, match="takes no audio"):
        load_generator("tiny", device="cpu", max_batch=1).open(Conditioning("x", inputs=("audio",)))


def test_prompt_switch_recache_reuses_each_frames_audio(gen):
    voice = speech(3.0, seed=5)
    a = gen.open(Conditioning("face one", seed=2, image=FACE, inputs=("audio",)))
    try:
        gen.step([a], [[ChunkInput("audio", 0, float_to_pcm_s16le(voice))]])
        held = set(gen.cache.cached_frames(a.row))
        assert held <= set(a.audio_windows) and len(a.audio_windows) <= len(held) + gen.cfg.stream.chunk_frames
        gen.set_prompt(a, "face two")
        gen.step([a], [[]])  # the re-cache replays the held frames with their stored windows
    finally:
        gen.close_stream(a)


def test_resume_of_an_audio_stream_equals_the_uninterrupted_one(gen, tmp_path):
    """A ResumeState of an avatar stream carries the cached frames' audio windows (the re-cache under
    the new prompt replays each frame with its own audio) and the audio buffer placed by media time
    (the audio received past what was consumed): the continuation makes exactly the frames of the
    uninterrupted stream after the same prompt switch, without being fed that audio again."""
    from models.resume import ResumeState

    voice = float_to_pcm_s16le(speech(3.0, seed=7))
    before = 4  # 9 latent frames with the image: past the tiny cache's 6 slots, so the ring has wrapped

    def opened():
        s = gen.open(Conditioning("face one", seed=4, image=FACE, inputs=("audio",)))
        gen.step([s], [[ChunkInput("audio", 0, voice)]])  # all the audio at once: the buffer holds the rest
        for _ in range(before - 1):
            gen.step([s], [[]])
        return s

    whole = opened()
    gen.set_prompt(whole, "face two")
    expected = [gen.step([whole], [[]])[0] for _ in range(2)]
    gen.close_stream(whole)

    first = opened()
    path = gen.snapshot(first).save(tmp_path / "state.safetensors")
    gen.close_stream(first)
    state = ResumeState.load(path)
    assert state.audio_windows.shape[0] == state.latents.shape[1] and len(state.audio_pcm) > 0
    resumed = gen.resume_stream("face two", state, inputs=("audio",))
    got = [gen.step([resumed], [[]])[0] for _ in range(2)]
    gen.close_stream(resumed)
    for want, have in zip(expected, got):
        assert (have.index, have.first_frame_index) == (want.index, want.first_frame_index)
        np.testing.assert_array_equal(have.frames, want.frames)


def test_audio_models_refuse_a_cut(gen):
    """The audio clock counts the cache's frames, so an avatar stream cannot start its cache over."""
    assert gen.info.cuts is False
    s = gen.open(Conditioning("a talking face", seed=1, image=FACE, inputs=("audio",)))
    try:
        with pytest.raises(ValueError, match="cannot cut"):
            gen.set_prompt(s, "a smiling face", cut=True)
        gen.set_prompt(s, "a smiling face")  # a re-cache switch is fine
    finally:
        gen.close_stream(s)
