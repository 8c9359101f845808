"""The avatar Self-Forcing stage under serving conditions: long rollouts judged on their last window and
switches through `set_prompt` go through the same rollout code as the shapes stage (self_forcing.py), and
the audio stays placed by media time (tiny-avatar preset at 32x32, random weights)."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import distill.self_forcing as self_forcing_module
from distill.avatar_data import AvatarDataset, mouth_box, render_face
from distill.avatar_stages import AvatarSelfForcingDMD, data_config
from distill.config import AvatarDataConfig, load_config
from models.generator import StreamingGenerator
from models.model_dir import random_transformer
from models.text_encoders import build_text_encoder
from models.vae import VideoVAE


@pytest.fixture(scope="module")
def parts():
    recipe = load_config(Path("configs/tiny-avatar.yaml"))
    cfg = recipe.model_config()
    torch.manual_seed(0)
    return recipe, cfg, VideoVAE.from_config(cfg.vae).eval(), build_text_encoder(cfg.text_encoder)


def method(parts, **options):
    recipe, cfg, vae, text = parts
    sc = dataclasses.replace(recipe.self_forcing, batch_size=1, **options)
    gen = StreamingGenerator(cfg, random_transformer(cfg, seed=4), vae, text, max_batch=1)
    faces = AvatarDataset(3, data_config(cfg, AvatarDataConfig()))
    teacher = random_transformer(cfg, seed=3).requires_grad_(False)
    return AvatarSelfForcingDMD(gen, teacher, random_transformer(cfg, seed=3), faces, sc, seed=0)


def recorded_rollouts(monkeypatch) -> list:
    """(kwargs, result) of every run_rollout call the Self-Forcing method makes."""
    calls = []
    run = self_forcing_module.run_rollout

    def recording(gen, prompts, seeds, num_chunks, **kw):
        out = run(gen, prompts, seeds, num_chunks, **kw)
        calls.append(({"prompts": prompts, "seeds": seeds, "num_chunks": num_chunks, **kw}, out))
        return out

    monkeypatch.setattr(self_forcing_module, "run_rollout", recording)
    return calls


def served(m, call) -> torch.Tensor:
    """The same stream served as a server serves it: opened from the image, audio arriving chunk by chunk
    by media time (each chunk's piece just before the chunk), the switch as `session.update` (set_prompt);
    latents of the chunks the rollout kept [1, C, F, h, w]."""
    kw, _ = call
    gen, cond = m.gen, m.cond
    pcm = kw["audio"][0]
    spf = cond.samples_per_frame
    stream = gen.open_stream(kw["prompts"][0], seed=kw["seeds"][0], image=kw["images"][0])
    c, kept = gen.cfg.stream.chunk_frames, []
    try:
        with torch.no_grad():
            for i in range(kw["num_chunks"]):
                _, end = cond.span(1 + i * c, c)  # the video frames this chunk reads (look-ahead included)
                have = stream.audio.end if stream.audio.end > 0 else 0
                stream.audio.write(have, pcm[have:end * spf])
                switch = kw.get("switch")
                if switch is not None and i == switch.chunk:
                    gen.set_prompt(stream, switch.prompts[0], transition_chunks=switch.transition_chunks)
                exit_step = None if i < kw["grad_from"] else kw["exit_steps"][i]
                x = gen.rollout_chunk([stream], exit_step=exit_step)
                if i >= kw["grad_from"]:
                    kept.append(x)
    finally:
        gen.close_stream(stream)
    return torch.cat(kept, dim=2)


def test_long_avatar_rollouts_judge_the_last_window_with_its_audio(parts, monkeypatch):
    calls = recorded_rollouts(monkeypatch)
    m = method(parts, rollout_chunks=5, rollout_min_chunks=2, dmd_window_chunks=1, score_frames=3)
    c = m.gen.cfg.stream.chunk_frames
    lengths = set()
    for _ in range(4):
        batch = m._rollout(grad=False)
        kw, ro = calls[-1]
        chunks = kw["num_chunks"]
        lengths.add(chunks)
        assert batch.logs["rollout_chunks"] == chunks and 2 <= chunks <= 5
        assert kw["grad_from"] == chunks - 1 and ro.latents.shape[2] == c  # burn-in served, one chunk judged
        # every window: [the clean image | frames of the last chunk], with the audio of those frames' media time
        assert batch.windows.shape[2] == 1 + (m.cfg.score_frames - 1)
        assert torch.equal(batch.windows[:, :, :1], ro.image_latents.float())
        first = 1 + (chunks - 1) * c
        audio = m.cond.windows(torch.from_numpy(np.stack(kw["audio"])), 0, 0, first + c)  # [1, F, M, A]
        assert torch.equal(batch.audio[:1, 0], audio[:, 0]) and torch.equal(batch.audio[:1, 1:], audio[:, first:first + 2])
        assert not torch.equal(audio[:, first:first + 2], audio[:, 1:3])  # the check above can tell frames apart
    assert len(lengths) > 1
    # the kept chunk is the one a stream served for that long gives (burn-in with every step)
    assert torch.allclose(served(m, calls[-1]), calls[-1][1].latents, atol=1e-5)


def test_avatar_switch_is_the_served_update_with_audio_in_place(parts, monkeypatch):
    calls = recorded_rollouts(monkeypatch)
    seen = []
    set_prompt = StreamingGenerator.set_prompt

    def spy(self, stream, prompt, transition_chunks=0):
        seen.append((self.cache.frames[stream.row], prompt, transition_chunks))
        return set_prompt(self, stream, prompt, transition_chunks)

    monkeypatch.setattr(StreamingGenerator, "set_prompt", spy)
    m = method(parts, rollout_chunks=4, dmd_window_chunks=2, switch_share=1.0, switch_transition_chunks=1, score_frames=3)
    c = m.gen.cfg.stream.chunk_frames
    switched = set()
    for _ in range(3):
        loss, logs = m.critic_loss()
        kw, ro = calls[-1]
        assert logs["switched"] == 1.0 and kw["switch"] is not None and 2 <= kw["switch"].chunk < 4
        frames, prompt, _ = seen[-1]
        assert frames == 1 + kw["switch"].chunk * c and prompt == kw["prompts"][0]  # the avatar's prompt, re-cached
        switched.add((kw["switch"].chunk, kw["switch"].transition_chunks))
        # the same frames as a served stream whose audio arrives by media time and that is updated at that chunk
        assert torch.allclose(served(m, calls[-1]), ro.latents, atol=1e-5)
    assert len(switched) > 1


def test_avatar_stage_rejects_image_share(parts):
    with pytest.raises(ValueError, match="image_share"):
        method(parts, image_share=0.5)


def test_mouth_box_holds_every_pixel_the_mouth_moves():
    faces = AvatarDataset(5, AvatarDataConfig(width=64, height=64))
    for i in range(8):
        identity = faces.identity(i)
        still = np.zeros((2, 2))
        closed, opened = render_face(identity, np.array([0.0, 1.0]), np.ones(2), still, 64, 64)
        moved = np.abs(closed.astype(int) - opened.astype(int)).sum(axis=-1)  # [H, W] what opening the mouth changes
        rows, cols = mouth_box(identity, 64, 64, faces.config.head_motion)  # as the stage and the scorer take it
        inside = np.zeros(moved.shape, bool)
        inside[rows, cols] = True
        assert moved.sum() > 0 and moved[inside].sum() >= 0.98 * moved.sum()  # all but the anti-aliased lip corners
        assert inside.mean() < 0.2  # a small part of the frame


def test_mouth_weight_weighs_the_mouth_in_every_judged_window(parts):
    plain = method(parts, rollout_chunks=3, score_frames=3)
    weighted = method(parts, rollout_chunks=3, score_frames=3, mouth_weight=4.0)
    a, b = plain._rollout(grad=False), weighted._rollout(grad=False)
    assert torch.equal(a.windows, b.windows)  # the same rollout: only the loss weights differ
    assert a.mask.shape[-2:] == (1, 1)
    mask = b.mask  # [B*n, 1, W, h, w]
    assert mask.shape[-2:] == a.windows.shape[-2:]
    assert torch.equal(mask > 0, (a.mask > 0).expand_as(mask))  # the same judged frames: the lead image never
    values = set(mask[mask > 0].unique().tolist())
    assert values == {1.0, 5.0}
    # where the weight sits: the latent pixels of the face's mouth box (the stream's face, drawn by the rollout)
    identity = weighted.faces.identity(weighted.last_ids[0])
    rows, cols = mouth_box(identity, 32, 32, weighted.faces.config.head_motion)
    up = mask[0, 0, 1] > 1  # [h, w], a judged frame of stream 0
    s = 32 // up.shape[0]
    ys, xs = torch.nonzero(up, as_tuple=True)
    assert ys.min() * s <= rows.start and (ys.max() + 1) * s >= rows.stop
    assert xs.min() * s <= cols.start and (xs.max() + 1) * s >= cols.stop
    assert up.float().mean() < 0.5
