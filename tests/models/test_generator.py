"""The streaming generator: determinism, prompt switches, batching, image conditioning, capacity."""

import numpy as np
import pytest
import torch

from models import CapacityError, load_generator


@pytest.fixture(scope="module")
def gen():
    return load_generator("tiny", device="cpu", max_batch=3)


def _take(gen, stream, n):
    return [gen.step([stream])[0] for _ in range(n)]


def test_chunks_have_announced_shape_and_indices(gen):
    s = gen.open_stream("a red circle", seed=1)
    try:
        chunks = _take(gen, s, 3)
    finally:
        gen.close_stream(s)
    h, w = gen.info.height, gen.info.width
    first = 0
    for i, c in enumerate(chunks):
        assert c.index == i and c.first_frame_index == first
        assert c.frames.dtype == np.uint8 and c.frames.shape == (gen.frames_in_chunk(i), h, w, 3)
        first += c.frames.shape[0]


def test_same_seed_and_prompt_give_same_frames(gen):
    a = [c.frames for c in _collect(gen, "blue squares", seed=7, n=3)]
    b = [c.frames for c in _collect(gen, "blue squares", seed=7, n=3)]
    c = [c.frames for c in _collect(gen, "blue squares", seed=8, n=3)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def _collect(gen, prompt, seed, n, image=None):
    it = gen.stream(prompt, seed=seed, image=image)
    out = [next(it) for _ in range(n)]
    it.close()
    return out


def test_prompt_switch_changes_frames_only_after_the_switch(gen):
    base = gen.open_stream("a red circle on black", seed=3)
    other = gen.open_stream("a red circle on black", seed=3)
    try:
        ref = _take(gen, base, 4)
        got = _take(gen, other, 2)
        gen.set_prompt(other, "two green triangles on white")
        got += _take(gen, other, 2)
    finally:
        gen.close_stream(base)
        gen.close_stream(other)
    for i in range(2):
        assert np.array_equal(ref[i].frames, got[i].frames), f"chunk {i} changed before the switch"
    assert got[2].prompt == "two green triangles on white"
    assert not np.array_equal(ref[2].frames, got[2].frames)


def test_transition_interpolates_over_chunks(gen, monkeypatch):
    """The embedding blend reaches the new prompt over its chunks, and the decoder goes on unprimed (the
    scene changes gradually, unlike a switch at once)."""
    primed = []
    decode = gen.decode
    monkeypatch.setattr(gen, "decode", lambda streams, x0: primed.append(streams[0].prime_decoder) or decode(streams, x0))
    s = gen.open_stream("a red circle", seed=4)
    try:
        _take(gen, s, 1)
        old = s.text_states.clone()
        gen.set_prompt(s, "a blue square", transition_chunks=3)
        gen.step([s])
        first = s.text_states.clone()
        gen.step([s])
        gen.step([s])
        new = gen._embed("a blue square")
    finally:
        gen.close_stream(s)
    assert torch.allclose(first, torch.lerp(old, new, 1 / 3), atol=1e-6)
    assert torch.allclose(s.text_states, new, atol=1e-6)
    assert primed == [False] * 4


def test_batched_step_equals_separate_streams(gen):
    solo_a = [c.frames for c in _collect(gen, "a red circle", seed=11, n=3)]
    solo_b = [c.frames for c in _collect(gen, "a yellow triangle", seed=12, n=3)]
    a = gen.open_stream("a red circle", seed=11)
    b = gen.open_stream("a yellow triangle", seed=12)
    try:
        pairs = [gen.step([a, b]) for _ in range(3)]
    finally:
        gen.close_stream(a)
        gen.close_stream(b)
    for i, (ca, cb) in enumerate(pairs):
        assert np.abs(ca.frames.astype(int) - solo_a[i].astype(int)).max() <= 1, f"chunk {i} stream a"
        assert np.abs(cb.frames.astype(int) - solo_b[i].astype(int)).max() <= 1, f"chunk {i} stream b"


def test_image_conditioning_starts_from_the_image(gen):
    img = np.zeros((40, 50, 3), np.uint8)
    img[:, :25] = (255, 0, 0)
    chunks = _collect(gen, "a red circle", seed=5, n=2, image=img)
    assert chunks[0].frames.shape[0] == gen.frames_in_chunk(0, has_image=True)
    plain = _collect(gen, "a red circle", seed=5, n=2)
    assert not np.array_equal(chunks[1].frames, plain[1].frames)


def test_capacity_and_row_reuse(gen):
    streams = [gen.open_stream("x", seed=i) for i in range(gen.info.max_batch)]
    with pytest.raises(CapacityError):
        gen.open_stream("one too many")
    gen.close_stream(streams.pop())
    streams.append(gen.open_stream("fits again"))
    for s in streams:
        gen.close_stream(s)


def test_rollout_with_grad_trains_cross_attention(gen):
    s = gen.open_stream("a red circle", seed=2)
    try:
        x0 = gen.rollout_chunk([s], exit_step=1, grad=True)
        x0.square().mean().backward()
    finally:
        gen.close_stream(s)
        grads = [p.grad for p in gen.transformer.blocks[0].attn2.to_k.parameters()]
        gen.transformer.zero_grad(set_to_none=True)
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_a_cut_starts_the_new_prompt_from_an_empty_cache_and_keeps_the_timeline(gen):
    """After `set_prompt(cut=True)` the next chunk's latents are exactly a fresh stream's first chunk
    of the new prompt (given the same noise), and so are its frames (a restarted decoder: a first
    chunk's length); a re-cache switch, which keeps the old frames as context, is not; chunk and
    frame numbering go on without a gap."""
    def switched_chunk(cut):
        s = gen.open_stream("a red circle on black", seed=3)
        try:
            chunks = _take(gen, s, 3)
            gen.set_prompt(s, "two green triangles on white", cut=cut)
            noise = s.rng.get_state()
            x0 = gen.rollout_chunk([s])
            after = gen.step([s])[0]
        finally:
            gen.close_stream(s)
        return x0, noise, chunks, after

    x_cut, noise, before, after = switched_chunk(cut=True)
    x_recache, _, _, _ = switched_chunk(cut=False)
    fresh = gen.open_stream("two green triangles on white", seed=99)
    try:
        fresh.rng.set_state(noise)
        x_fresh = gen.rollout_chunk([fresh])
    finally:
        gen.close_stream(fresh)
    assert torch.allclose(x_cut, x_fresh, atol=1e-5)
    assert not torch.allclose(x_recache, x_fresh, atol=1e-3)
    assert after.index == 3 and after.prompt == "two green triangles on white"  # rollout_chunk neither decodes nor counts
    assert after.first_frame_index == sum(len(c.frames) for c in before)
    assert len(after.frames) == len(before[0].frames) < gen.info.chunk_video_frames  # a first chunk's length


def test_a_cut_chunk_is_a_fresh_streams_first_chunk_on_screen(gen):
    """The frames after a cut are exactly those of a fresh stream of the new prompt given the same noise:
    the decoder restarts, nothing of the old scene is left in its causal cache."""
    s = gen.open_stream("a red circle on black", seed=3)
    fresh = gen.open_stream("two green triangles on white", seed=99)
    try:
        _take(gen, s, 3)
        gen.set_prompt(s, "two green triangles on white", cut=True)
        fresh.rng.set_state(s.rng.get_state())
        cut, first = gen.step([s])[0], gen.step([fresh])[0]
    finally:
        gen.close_stream(s)
        gen.close_stream(fresh)
    assert cut.first_frame_index > 0 and first.first_frame_index == 0
    assert np.array_equal(cut.frames, first.frames)


def test_a_cut_switches_at_once(gen):
    s = gen.open_stream("a red circle", seed=1)
    try:
        with pytest.raises(ValueError, match="transition_chunks must be 0"):
            gen.set_prompt(s, "a blue square", transition_chunks=2, cut=True)
    finally:
        gen.close_stream(s)


def _decoder_copy(gen, decoder):
    copy = gen.vae.streaming_decoder(1)
    copy._cache = [c.clone() if isinstance(c, torch.Tensor) else c for c in decoder._cache]
    copy.latent_frames_seen = decoder.latent_frames_seen
    return copy


@pytest.mark.parametrize("prompt,primes", [("two green triangles on white", True), ("a red circle on black", False)])
def test_after_a_recache_switch_the_decoder_sees_the_new_chunks_first_latent_once_before_the_chunk(gen, prompt, primes):
    """After a re-cache switch to another prompt, so its causal cache holds the new scene: the switch is one
    frame boundary, not the old scene smeared into the new chunk's first frames. A re-cache to the prompt the
    stream has leaves the decoder going on. (A cut restarts the decoder: the test above.)"""
    s = gen.open_stream("a red circle on black", seed=3)
    try:
        _take(gen, s, 2)
        gen.set_prompt(s, prompt)
        before = _decoder_copy(gen, s.decoder)
        x0 = gen.rollout_chunk([s])  # [1, C, c, h, w]
        got = gen.decode([s], x0)[0]
        again = gen.decode([s], x0)[0]  # the next chunk: primed once only
    finally:
        gen.close_stream(s)
    primed = _decoder_copy(gen, before)
    if primes:
        primed.decode_chunk(x0[:, :, :1])
    want = primed.decode_chunk(x0)
    assert torch.allclose(got, want, atol=1e-6)
    other = _decoder_copy(gen, before)
    if not primes:
        other.decode_chunk(x0[:, :, :1])
    assert not torch.allclose(got, other.decode_chunk(x0), atol=1e-4)
    assert torch.allclose(again, primed.decode_chunk(x0), atol=1e-6)


def test_a_still_image_code_goes_to_the_sink_and_the_first_frame_code_is_shown():
    """stream.image_still_frames N > 0: the start image is committed to the sink as the last latent frame of an
    N-latent-frame still video of it (the code of later frames), while the first frame shown is still the
    decoded first-frame code, so that frame is the same as with N = 0 and the frames generated after it differ."""
    import dataclasses

    from models.vae import uint8_to_video

    plain = load_generator("tiny", device="cpu", max_batch=1)
    img = np.zeros((plain.cfg.stream.height, plain.cfg.stream.width, 3), np.uint8)  # at the model's size: no resize
    img[8:24, 8:40] = (200, 40, 40)
    still = load_generator("tiny", device="cpu", max_batch=1)
    still.cfg = dataclasses.replace(still.cfg, stream=dataclasses.replace(still.cfg.stream, image_still_frames=3))
    pixels = uint8_to_video(img[None, None])[:, :, 0]
    with torch.no_grad():
        first, later = still.vae.encode_image(pixels), still.vae.encode_still(pixels, 3)
    assert (first - later).abs().mean() > 0.05  # two codes of one image

    chunks = {}
    for name, gen in (("plain", plain), ("still", still)):
        s = gen.open_stream("a red circle", seed=3, image=img)
        sink = gen.cache.latents[s.row][:, gen.cache.slot_of(0)]  # [C, h, w] the committed frame 0
        want = first if name == "plain" else later
        torch.testing.assert_close(sink, want[0, :, 0].to(sink.dtype))
        torch.testing.assert_close(s.sink_latent, want.to(s.sink_latent.dtype))
        torch.testing.assert_close(s.image_latent, first.to(s.image_latent.dtype))
        chunks[name] = gen.step([s])[0].frames
        gen.close_stream(s)
    assert np.array_equal(chunks["plain"][0], chunks["still"][0])  # the image shown, decoded from its first-frame code
    assert not np.array_equal(chunks["plain"][1:], chunks["still"][1:])


def _with_context_noise(sigma: float):
    import dataclasses

    gen = load_generator("tiny", device="cpu", max_batch=2)
    gen.cfg = dataclasses.replace(gen.cfg, stream=dataclasses.replace(gen.cfg.stream, context_noise=sigma))
    return gen


def _commit_spy(gen):
    """Record (latents, timesteps) of every cache-writing pass of `gen`'s transformer."""
    writes, forward = [], gen.transformer.forward_stream

    def spy(x, t, *args, write=False, **kwargs):
        if write:
            writes.append((x.detach().clone(), t.detach().clone()))
        return forward(x, t, *args, write=write, **kwargs)

    gen.transformer.forward_stream = spy
    return writes


def test_context_noise_commits_each_chunk_noised_from_its_streams_generator_and_the_image_clean():
    """stream.context_noise s: a generated chunk's commit pass sees (1 - s) x0 + s eps at timestep(s), eps from the
    stream's own generator (same seed, same frames), while the cache keeps the clean x0 and a start image is written
    clean; s = 0 commits x0 itself at t = 0."""
    sigma = 0.3
    gen = _with_context_noise(sigma)
    writes = _commit_spy(gen)
    img = np.full((gen.cfg.stream.height, gen.cfg.stream.width, 3), 90, np.uint8)
    s = gen.open_stream("a red circle", seed=5, image=img)
    (image_x, image_t), = writes
    assert torch.all(image_t == 0)  # the start image: clean
    torch.testing.assert_close(image_x, s.sink_latent.to(image_x.dtype))
    x0 = gen.rollout_chunk([s])  # [1, C, c, h, w]
    x, t = writes[-1]
    assert torch.allclose(t, torch.full_like(t, float(gen.schedule.timestep(sigma))))
    eps = (x.float() - (1 - sigma) * x0.float()) / sigma  # the noise the pass saw
    assert 0.8 < eps.std() < 1.2 and abs(eps.mean()) < 0.2 and (x0.float() - x.float()).abs().mean() > 0.1
    slots = [gen.cache.slot_of(f) for f in range(1, 1 + x0.shape[2])]
    torch.testing.assert_close(gen.cache.latents[s.row][:, slots], x0[0].to(gen.cache.latents.dtype))  # kept clean
    gen.close_stream(s)

    again = _with_context_noise(sigma)
    a, b = (_collect(g, "a red circle", 5, 3, image=img) for g in (gen, again))
    assert all(np.array_equal(p.frames, q.frames) for p, q in zip(a, b))  # the noise is the stream's: same seed, same stream

    clean = _with_context_noise(0.0)
    clean_writes = _commit_spy(clean)
    s = clean.open_stream("a red circle", seed=5, image=img)
    x0 = clean.rollout_chunk([s])
    x, t = clean_writes[-1]
    assert torch.all(t == 0) and torch.equal(x, x0.to(x.dtype))
    assert not all(np.array_equal(p.frames, q.frames) for p, q in zip(a, _collect(clean, "a red circle", 5, 3, image=img)))


def test_a_recache_under_context_noise_noises_the_generated_frames_and_keeps_the_image_clean():
    """The KV re-cache of a prompt switch replays the held frames as the commits wrote them: generated frames
    noised to stream.context_noise, the start image (frame 0) clean."""
    sigma = 0.4
    gen = _with_context_noise(sigma)
    img = np.full((gen.cfg.stream.height, gen.cfg.stream.width, 3), 90, np.uint8)
    s = gen.open_stream("a red circle", seed=2, image=img)
    for _ in range(2):
        gen.rollout_chunk([s])
    writes = _commit_spy(gen)
    gen._recache(s)
    ts = torch.cat([t[0] for _, t in writes])  # per replayed frame, oldest first
    held = gen.cache.cached_frames(s.row)
    assert len(ts) == len(held) and held[0] == 0
    assert ts[0] == 0 and torch.allclose(ts[1:], torch.full_like(ts[1:], float(gen.schedule.timestep(sigma))))
    gen.close_stream(s)


@pytest.mark.parametrize("sigma", [-0.1, 1.0])
def test_a_context_noise_outside_0_to_1_is_refused(sigma):
    import dataclasses

    from models.config import preset

    cfg = preset("tiny")
    with pytest.raises(ValueError, match="context_noise"):
        dataclasses.replace(cfg, stream=dataclasses.replace(cfg.stream, context_noise=sigma)).validate()
