"""Self-Forcing rollouts under the conditions of serving (distill/self_forcing.py options):
long rollouts with DMD on the last chunks, prompt switches through the server's `set_prompt`,
and streams started from an image as `stream(image=...)` starts them."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import distill.self_forcing as self_forcing_module
from distill.pipeline import Pipeline
from distill.ode_pairs import ODEPairStore
from distill.rollout import Switch, labelled_windows, rollout, run_rollout
from distill.self_forcing import SelfForcingDMD
from tests.distill.test_self_forcing_dmd import parts  # noqa: F401  (the tiny recipe's model config, VAE, text encoder)
from distill.shapes_data import StartImages
from models import load_generator
from models.generator import StreamingGenerator
from models.model_dir import random_transformer, save_model_dir
from models.vae import frames_to_uint8, uint8_to_video
from tests.distill.tiny_recipe import tiny_recipe

PROMPTS = ["a red circle", "a blue square", "two green triangles"]


def method(parts, max_batch=2, images=None, **options):
    """SelfForcingDMD over random tiny student / teacher / critic with self_forcing `options`."""
    recipe, cfg, vae, text = parts
    sc = dataclasses.replace(recipe.self_forcing, **options)
    gen = StreamingGenerator(cfg, random_transformer(cfg, seed=4), vae, text, max_batch=max_batch)
    teacher = random_transformer(cfg, seed=3).requires_grad_(False)
    critic = random_transformer(cfg, seed=3)
    return SelfForcingDMD(gen, teacher, critic, PROMPTS, sc, seed=0, images=images)


def grad_forwards(student) -> list[bool]:
    """Records, per student forward, whether it ran with gradient (denoising passes only)."""
    calls = []
    forward_stream = student.forward_stream

    def recording(x, t, text_kv, cache, plan, write=False, **kw):
        if not write:
            calls.append(torch.is_grad_enabled())
        return forward_stream(x, t, text_kv, cache, plan, write, **kw)

    student.forward_stream = recording
    return calls


# ---------------------------------------------------------------------------------------------
# long rollouts
# ---------------------------------------------------------------------------------------------

def peak_cpu_bytes(fn) -> int:
    """Peak of the CPU memory torch allocated while `fn` ran, from the profiler's raw allocation and
    free records (its grouped `events()` view takes seconds per step to build)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    now = peak = 0
    for _, size in sorted(records):
        now += size
        peak = max(peak, now)
    return peak


def student_step_peak(parts, **options) -> int:
    m = method(parts, max_batch=1, batch_size=1, score_frames=4, **options)

    def step():
        loss, _ = m.student_loss()
        loss.backward()

    step()  # warm-up: text cache, lazily built buffers
    return peak_cpu_bytes(step)


def test_long_rollout_memory_does_not_grow_with_its_length(parts):
    """DMD on the last 2 chunks: a 20-chunk rollout (10x the 4-frame window, far past the cache)
    peaks at the memory of a 3-chunk one. Without the window (every chunk scored, the plain
    rollout) the same lengths grow several-fold: the measurement sees activations."""
    short = student_step_peak(parts, rollout_chunks=3, dmd_window_chunks=2)
    long = student_step_peak(parts, rollout_chunks=20, dmd_window_chunks=2)
    assert long <= 1.1 * short, (short, long)
    plain_short = student_step_peak(parts, rollout_chunks=3)
    plain_long = student_step_peak(parts, rollout_chunks=20)
    assert plain_long > 2 * plain_short, (plain_short, plain_long)


def test_long_rollout_gradient_only_in_the_window_after_a_served_burn_in(parts):
    """Only the last `dmd_window_chunks` chunks run a forward with gradient; the chunks before are
    served exactly (all steps, no gradient), so the window starts from a served stream's cache."""
    m = method(parts, max_batch=1, batch_size=1, rollout_chunks=7, dmd_window_chunks=2, score_frames=4)
    calls = grad_forwards(m.student)
    m.student_loss()[0].backward()
    k = m.schedule.num_student_steps
    assert sum(calls) == 2  # one exit forward in each of the two windowed chunks
    assert calls[:5 * k] == [False] * (5 * k)  # the five burn-in chunks: every step, no gradient

    gen, c = m.gen, m.gen.cfg.stream.chunk_frames
    exits = [1, 0]
    ro = run_rollout(gen, ["a red circle"], [5], 7, exit_steps=[0] * 5 + exits, grad=True, grad_from=5)
    assert ro.latents.shape[2] == 2 * c and ro.latents.requires_grad and ro.grad_from == 5
    with torch.no_grad():  # the same stream with the first five chunks served in full
        ref = rollout(gen, ["a red circle"], [5], 7, exit_steps=[k - 1] * 5 + exits)
    assert torch.allclose(ro.latents.detach(), ref[:, :, 5 * c:], atol=1e-6)


def test_random_rollout_length_is_logged_and_bounded(parts):
    m = method(parts, max_batch=1, batch_size=1, rollout_chunks=6, rollout_min_chunks=2, dmd_window_chunks=1,
               score_frames=2)
    with torch.no_grad():
        batches = [m._rollout(grad=False) for _ in range(6)]
    lengths = {batch.logs["rollout_chunks"] for batch in batches}
    assert lengths <= {2.0, 3.0, 4.0, 5.0, 6.0} and len(lengths) > 1
    assert all(batch.windows.shape[2] == 2 for batch in batches)  # the last chunk alone is judged


# ---------------------------------------------------------------------------------------------
# prompt switches
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("recache_frames", [0, 2])
def test_switch_rollout_is_the_served_switch(parts, monkeypatch, recache_frames):
    """A rollout with a Switch gives the latents a served stream decodes when `session.update` arrives
    at that chunk (the engine calls `set_prompt` then `step`): hard switch and smooth transition, with
    every held frame re-cached or only the newest (`stream.recache_frames`). (The served decoder is primed
    at a hard switch, so the frames are compared where it is not.)"""
    _, cfg, vae, text = parts
    cfg = dataclasses.replace(cfg, stream=dataclasses.replace(cfg.stream, recache_frames=recache_frames))
    gen = StreamingGenerator(cfg, random_transformer(cfg, seed=0), vae, text, max_batch=1)
    served_latents = []
    decode = gen.decode
    monkeypatch.setattr(gen, "decode", lambda streams, x0: served_latents.append(x0) or decode(streams, x0))
    chunks = 5
    for transition in (0, 2):
        with torch.no_grad():
            x = run_rollout(gen, ["a red circle"], [7], chunks, switch=Switch(2, ["a blue square"], transition)).latents
        state = gen.open_stream("a red circle", seed=7)
        served = []
        served_latents.clear()
        for i in range(chunks):
            if i == 2:
                gen.set_prompt(state, "a blue square", transition_chunks=transition)
            served.append(gen.step([state])[0].frames)
        gen.close_stream(state)
        assert torch.allclose(x, torch.cat(served_latents, dim=2).to(x.dtype), atol=1e-5)
        if transition:
            decoded = frames_to_uint8(vae.decode(x))[0]
            assert np.abs(decoded.astype(int) - np.concatenate(served).astype(int)).max() <= 1
        with torch.no_grad():
            unswitched = rollout(gen, ["a red circle"], [7], chunks)
        assert torch.equal(x[:, :, :4], unswitched[:, :, :4]) and not torch.allclose(x, unswitched)


def test_switch_rollout_recaches_through_the_generator(parts, monkeypatch):
    """The method's switch goes through StreamingGenerator.set_prompt and its KV re-cache (the
    functions the server's engine calls), once per stream, under the new prompt."""
    seen = {"set_prompt": [], "recache": []}
    set_prompt, recache = StreamingGenerator.set_prompt, StreamingGenerator._recache

    def spy_set_prompt(self, stream, prompt, transition_chunks=0):
        seen["set_prompt"].append((stream.prompt, prompt, transition_chunks))
        return set_prompt(self, stream, prompt, transition_chunks)

    def spy_recache(self, stream):
        seen["recache"].append((stream.prompt, self.cache.frames[stream.row]))
        return recache(self, stream)

    monkeypatch.setattr(StreamingGenerator, "set_prompt", spy_set_prompt)
    monkeypatch.setattr(StreamingGenerator, "_recache", spy_recache)
    m = method(parts, rollout_chunks=4, score_frames=2, switch_share=1.0)
    logs = m.critic_loss()[1]
    assert len(seen["set_prompt"]) == 2 and all(old != new and t == 0 for old, new, t in seen["set_prompt"])
    assert [p for p, _ in seen["recache"]] == [new for _, new, _ in seen["set_prompt"]]
    c = m.gen.cfg.stream.chunk_frames
    assert all(frames % c == 0 and 0 < frames < 4 * c for _, frames in seen["recache"])  # at a chunk boundary
    assert logs["switched"] == 1.0
    # smooth transitions (drawn in 0..3 chunks) blend embeddings instead: only hard switches re-cache
    m2 = method(parts, rollout_chunks=4, score_frames=2, switch_share=1.0, switch_transition_chunks=3)
    seen["set_prompt"].clear(), seen["recache"].clear()
    for _ in range(4):
        m2.critic_loss()
    transitions = [t for _, _, t in seen["set_prompt"]]
    assert set(transitions) <= {0, 1, 2, 3} and len(set(transitions)) > 1
    assert len(seen["recache"]) == transitions.count(0)


def test_dmd_after_a_switch_is_judged_under_the_new_prompt(parts, monkeypatch):
    """The teacher (real score) and the critic (fake score) judge every frame from the switch on
    under the new prompt's embedding, and the frames before it under the old one; a window
    holding both is judged twice, each time with only its own prompt's frames in the loss."""
    m = method(parts, rollout_chunks=2, score_frames=4, switch_share=1.0)  # one window, switch at chunk 1
    switches, masks = [], []
    run = self_forcing_module.run_rollout

    def spy_rollout(gen, prompts, seeds, chunks, **kw):
        switches.append((list(prompts), kw["switch"]))
        return run(gen, prompts, seeds, chunks, **kw)

    loss_fn = self_forcing_module.dmd_generator_loss

    def spy_loss(x, real, fake, mask=None):
        masks.append(mask)
        return loss_fn(x, real, fake, mask=mask)

    texts = {"teacher": [], "critic": []}
    for role in texts:
        getattr(m, role).register_forward_pre_hook(lambda mod, args, role=role: texts[role].append(args[2].detach()))
    monkeypatch.setattr(self_forcing_module, "run_rollout", spy_rollout)
    monkeypatch.setattr(self_forcing_module, "dmd_generator_loss", spy_loss)
    m.student_loss()[0].backward()

    (old, switch), = switches
    assert switch.chunk == 1 and all(a != b for a, b in zip(old, switch.prompts))
    emb = lambda prompts: m.text.get_batch(prompts)[0].float()  # noqa: E731  [B, L, D]
    want = torch.cat([emb(old), emb(switch.prompts)])  # window-major: (window 0, old), (window 0, new)
    b = len(old)
    assert torch.equal(texts["critic"][0], want)
    assert torch.equal(texts["teacher"][0][:2 * b], want)  # the conditional half of the CFG batch
    mask = masks[0][:, 0, :, 0, 0]  # [2B, W]
    assert mask[:b].tolist() == [[1, 1, 0, 0]] * b and mask[b:].tolist() == [[0, 0, 1, 1]] * b


def test_labelled_windows():
    assert labelled_windows([0] * 6, 4) == [(0, 0), (2, 0)]
    assert labelled_windows([0, 0, 1, 1, 1, 1], 2) == [(0, 0), (2, 1), (4, 1)]
    assert labelled_windows([0, 0, 1, 1], 4) == [(0, 0), (0, 1)]
    assert labelled_windows([-1, 0, 0, 0, 0], 4) == [(0, 0), (1, 0)]


# ---------------------------------------------------------------------------------------------
# start images
# ---------------------------------------------------------------------------------------------

def test_image_rollout_starts_from_the_encoded_image(parts, monkeypatch):
    """A start-image rollout opens its streams through `open(Conditioning(image=...))` with a frame
    of its prompt's shapes clip: the sink's first slot holds that image's VAE latent, the chunks
    follow it (alignment shifted by one frame) and the judged clip leads with it as context."""
    recipe = parts[0]
    images = StartImages(11, recipe.data)
    opened, masks = [], []
    open_ = StreamingGenerator.open

    def spy_open(self, conditioning):
        stream = open_(self, conditioning)
        opened.append((conditioning, self.cache.frames[stream.row], self.cache.latents[stream.row][:, :1].clone()))
        return stream

    loss_fn = self_forcing_module.dmd_generator_loss

    def spy_loss(x, real, fake, mask=None):
        masks.append((x.detach(), mask))
        return loss_fn(x, real, fake, mask=mask)

    monkeypatch.setattr(StreamingGenerator, "open", spy_open)
    monkeypatch.setattr(self_forcing_module, "dmd_generator_loss", spy_loss)
    m = method(parts, rollout_chunks=2, score_frames=5, image_share=1.0, images=images)
    m.student_loss()[0].backward()
    gen = m.gen
    assert len(opened) == 2
    for conditioning, committed, sink in opened:
        i = PROMPTS.index(conditioning.prompt)
        frame = next(j for j in range(images.frames) if np.array_equal(images(i, j), conditioning.image))
        assert conditioning.image.shape == (32, 32, 3)
        with torch.no_grad():
            encoded = gen.vae.encode_image(uint8_to_video(images(i, frame)[None, None])[:, :, 0])  # [1, C, 1, h, w]
        assert committed == 1  # the image is frame 0; the first chunk starts at frame 1
        assert torch.allclose(sink, encoded[0], atol=1e-5)
    x, mask = masks[0]
    first = torch.stack([sink for _, _, sink in opened])  # [B, C, 1, h, w]
    assert torch.allclose(x[:, :, :1], first, atol=1e-5)
    assert mask[:, 0, :, 0, 0].tolist() == [[0, 1, 1, 1, 1]] * 2


def test_image_lead_judges_every_window_of_an_image_rollout_led_by_the_clean_image(parts):
    """With `image_lead`, an image rollout's windows (several, the burn-in chunk excluded) all lead with the
    stream's start-image latent: the critic and the teacher see it clean (timestep 0, x_t equal to it) and no
    loss falls on it; a text rollout of the same method is judged as before (no lead, one sigma per window)."""
    recipe = parts[0]
    images = StartImages(11, recipe.data)
    m = method(parts, rollout_chunks=3, dmd_window_chunks=2, score_frames=4, image_share=1.0, image_lead=True, images=images)
    seen = []
    critic_forward = m.critic.forward

    def spy(x, t, text, **kw):
        seen.append((x.detach().clone(), t.detach().clone()))
        return critic_forward(x, t, text, **kw)

    m.critic.forward = spy
    rollout_ = m._rollout
    batches = []
    m._rollout = lambda grad: batches.append(rollout_(grad)) or batches[-1]
    m.student_loss()[0].backward()
    batch = batches[-1]
    assert batch.lead
    c = m.gen.cfg.stream.chunk_frames
    n = len(batch.windows) // 2
    assert batch.windows.shape[2] == 4 and n == -(-(2 * c) // 3)  # [image | 3 frames] windows over 2 chunks
    image = batch.windows[:2, :, :1]  # [B, C, 1, h, w] the first window's lead
    assert torch.equal(batch.windows[:, :, :1], image.repeat(n, 1, 1, 1, 1))
    assert batch.mask[:, 0, 0, 0, 0].tolist() == [0.0] * (2 * n) and batch.mask[:, 0, 1:].min() == 1
    x_t, t = seen[-1]
    assert t.shape == (2 * n, 4) and t[:, 0].abs().max() == 0 and t[:, 1:].min() > 0
    assert torch.allclose(x_t[:, :, 0], image.repeat(n, 1, 1, 1, 1)[:, :, 0], atol=1e-6)
    text_only = method(parts, rollout_chunks=3, dmd_window_chunks=2, score_frames=4, image_lead=True, image_share=1e-9,
                       images=images)._rollout(grad=False)
    assert not text_only.lead and text_only.windows.shape[2] == 4


def test_image_start_window_judges_image_rollouts_from_their_first_chunk(parts, monkeypatch):
    """With `image_start_window`, every image rollout of a long-rollout recipe is at most dmd_window_chunks long,
    has gradient from its first chunk and does not switch; text rollouts keep their drawn lengths and burn-in."""
    recipe = parts[0]
    images = StartImages(11, recipe.data)
    calls = []
    run = self_forcing_module.run_rollout

    def spy(gen, prompts, seeds, chunks, grad_from=0, switch=None, images=None, **kw):
        calls.append((chunks, grad_from, switch, images is not None))
        return run(gen, prompts, seeds, chunks, grad_from=grad_from, switch=switch, images=images, **kw)

    monkeypatch.setattr(self_forcing_module, "run_rollout", spy)
    options = dict(rollout_chunks=4, rollout_min_chunks=3, dmd_window_chunks=2, score_frames=4, switch_share=1.0,
                   images=images)
    m = method(parts, image_share=1.0, image_start_window=True, **options)
    for _ in range(3):
        m._rollout(grad=False)
    assert calls and all(c == (2, 0, None, True) for c in calls)
    calls.clear()
    m = method(parts, image_share=1e-9, image_start_window=True, **options)
    for _ in range(3):
        m._rollout(grad=False)
    assert all(n in (3, 4) and g == n - 2 and sw is not None and not im for n, g, sw, im in calls)


def test_image_lead_needs_image_rollouts(parts):
    with pytest.raises(ValueError, match="image_share"):
        method(parts, image_lead=True)


def test_image_rollout_is_the_served_image_stream(parts):
    """run_rollout from an image gives the frames `stream(prompt, seed, image=...)` gives."""
    recipe, cfg, vae, text = parts
    gen = StreamingGenerator(cfg, random_transformer(cfg, seed=0), vae, text, max_batch=1)
    image = StartImages(5, recipe.data)(0, 3)
    with torch.no_grad():
        ro = run_rollout(gen, ["a red circle"], [2], 3, images=[image])
    stream = gen.stream("a red circle", seed=2, image=image)
    served = np.concatenate([next(stream).frames for _ in range(3)])
    stream.close()
    decoded = frames_to_uint8(vae.decode(torch.cat([ro.image_latents, ro.latents], dim=2)))[0]
    assert decoded.shape == served.shape
    assert np.abs(decoded.astype(int) - served.astype(int)).max() <= 1


def test_image_share_needs_start_images(parts):
    with pytest.raises(ValueError, match="start images"):
        method(parts, image_share=0.5)


def test_mouth_weight_is_refused_where_there_is_no_face(parts):
    with pytest.raises(ValueError, match="mouth_weight"):
        method(parts, mouth_weight=3.0)


def test_supports_image_says_whether_the_weights_were_trained_from_images(parts, tmp_path):
    """framecast.json's supports_image (and the loaded model's info) turns true after a self-forcing
    run with image rollouts, stays true after a later one without, and is false before."""
    recipe, cfg, vae, _ = parts
    save_model_dir(tmp_path / "model", dataclasses.replace(cfg, name=recipe.name), transformer=random_transformer(cfg, seed=1),
                   teacher=random_transformer(cfg, seed=2), vae=vae)
    flags = []
    for share in (0.0, 1.0, 0.0):
        run = tiny_recipe(tmp_path, self_forcing={"max_steps": 1, "critic_steps": 1, "rollout_chunks": 2,
                                                  "score_frames": 4, "image_share": share, "shapes_prompts": 16})
        Pipeline(run, progress=False).run("self-forcing")
        flags.append(json.loads((tmp_path / "model" / "framecast.json").read_text())["supports_image"])
    assert flags == [False, True, True]
    assert load_generator(str(tmp_path / "model"), device="cpu").info.supports_image


def test_image_led_ode_pairs_make_an_ode_init_student_that_supports_images(parts, tmp_path):
    """The `ode-pairs` stage with image_lead_share samples image-led pairs from the prompts' own clips (the shapes
    dataset's start images), and the `ode-init` student trained on them says it supports images; without led
    pairs it does not (until Self-Forcing trains image starts)."""
    recipe, cfg, vae, _ = parts
    flags = []
    for share in (0.0, 0.5):
        root = tmp_path / str(share)
        save_model_dir(root / "model", dataclasses.replace(cfg, name=recipe.name), transformer=random_transformer(cfg, seed=1),
                       teacher=random_transformer(cfg, seed=2), vae=vae)
        run = tiny_recipe(root, ode_pairs={"num_pairs": 4, "batch_size": 2, "steps": 2, "image_lead_share": share},
                          ode_init={"max_steps": 1, "batch_size": 2})
        pipeline = Pipeline(run, progress=False)
        pipeline.run("ode-pairs")
        pipeline.run("ode-init")
        pairs = ODEPairStore(root / "work" / "ode-pairs")
        flags.append((pairs.lead.tolist(), json.loads((root / "model" / "framecast.json").read_text())["supports_image"]))
    assert flags == [([False] * 4, False), ([False, False, True, True], True)]


def test_fresh_windows_judge_the_frames_after_a_switch_without_the_old_ones(parts, monkeypatch):
    """switch_fresh_windows: the new prompt's frames are judged in windows of their own (a fresh clip
    of the new prompt), the switch drawn so a whole window follows it; the old prompt's window keeps
    the new frames as unjudged context, as without the option."""
    c = parts[1].stream.chunk_frames
    # a window of two chunks after the switch: with 3-chunk rollouts it must come at chunk 1
    m = method(parts, rollout_chunks=3, score_frames=2 * c, switch_share=1.0, switch_fresh_windows=True)
    rollouts, judged = [], []
    run, loss_fn = self_forcing_module.run_rollout, self_forcing_module.dmd_generator_loss

    def spy_rollout(gen, prompts, seeds, chunks, **kw):
        rollouts.append((kw["switch"], run(gen, prompts, seeds, chunks, **kw)))
        return rollouts[-1][1]

    def spy_loss(x, real, fake, mask=None):
        judged.append((x.detach(), mask))
        return loss_fn(x, real, fake, mask=mask)

    monkeypatch.setattr(self_forcing_module, "run_rollout", spy_rollout)
    monkeypatch.setattr(self_forcing_module, "dmd_generator_loss", spy_loss)
    m.student_loss()[0].backward()
    (switch, ro), = rollouts
    assert switch.chunk == 1
    x, mask = judged[0]
    b, latents = ro.latents.shape[0], ro.latents.float()
    assert x.shape[0] == 2 * b  # (window at 0, old prompt), (window at the switch, new prompt)
    assert torch.equal(x[:b], latents[:, :, :2 * c]) and torch.equal(x[b:], latents[:, :, c:3 * c])
    assert mask[:b, 0, :, 0, 0].tolist() == [[1] * c + [0] * c] * b
    assert mask[b:, 0, :, 0, 0].tolist() == [[1] * (2 * c)] * b  # nothing of the old prompt in its window
    with pytest.raises(ValueError, match="switch_fresh_windows"):
        method(parts, rollout_chunks=2, score_frames=2 * c, switch_share=1.0, switch_fresh_windows=True)
