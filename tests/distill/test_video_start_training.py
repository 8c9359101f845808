"""Training sees the video-start embedding where serving puts it (TransformerConfig.video_start): the teacher on
crops from a video's first latent frame (and image-led crops), the ODE pairs and the ODE-init student on streams
from their start, Self-Forcing's teacher and critic on the windows that begin at a stream's first latent frame;
a recipe that adds it starts from a teacher without it, unchanged."""

import dataclasses

import torch

from distill.latents import null_text
from distill.ode_init import ODERegressionMethod
from distill.ode_pairs import ODEPairStore, sample_ode_pairs
from distill.self_forcing import SelfForcingDMD
from distill.teacher_stage import FlowMatchMethod
from models.config import apply_overrides
from models.generator import StreamingGenerator
from models.model_dir import random_transformer, save_model_dir
from models.schedule import FlowMatchSchedule
from models.transformer import CausalWanTransformer
from models.vae import VideoVAE
from tests.distill.tiny_recipe import assert_same_function, grow_teacher, tiny_parts, tiny_recipe


def _with_start(cfg):
    return apply_overrides(cfg, {"transformer": {"video_start": True}})


def _spy(model, seen):
    forward = model.forward

    def spy(x, t, text, **kw):
        seen.append(kw.get("video_start", False))
        return forward(x, t, text, **kw)

    model.forward = spy


def test_teacher_marks_crops_from_the_first_frame_and_image_led_crops(tmp_path):
    recipe, cfg, _, text = tiny_parts(tmp_path)
    cfg = _with_start(cfg)
    c, n, f = cfg.transformer.in_channels, 4, 6
    frame_ids = torch.arange(n * f, dtype=torch.float32).view(n, 1, f, 1, 1)  # clip i, frame j -> i * f + j
    null = null_text(text)
    data = {"latents": frame_ids.expand(n, c, f, 4, 4).clone(), "text": null.expand(n, *null.shape[-2:]).clone()}
    model = random_transformer(cfg, seed=0)
    seen = []
    _spy(model, seen)
    teacher = dataclasses.replace(recipe.teacher, image_lead_share=0.3, train_frames=3, batch_size=64)
    method = FlowMatchMethod(model, FlowMatchSchedule(cfg.schedule), data, null, teacher)
    state = method.state_dict()
    x0, _, led, _, first = method.batch()
    assert torch.equal(first, (x0[:, 0, 0, 0, 0] % f == 0))  # frame 0 of its clip leads the crop
    assert first[led].all() and first[~led].any() and not first[~led].all()
    method.load_state_dict(state)
    method.loss("teacher", 0)
    assert torch.equal(seen[-1], first)


def test_ode_pairs_and_ode_init_run_streams_from_their_start(tmp_path):
    recipe, cfg, vae, text = tiny_parts(tmp_path)
    cfg = _with_start(cfg)
    teacher, student = random_transformer(cfg, seed=1), random_transformer(cfg, seed=2)
    seen_teacher, seen_student = [], []
    _spy(teacher, seen_teacher)
    _spy(student, seen_student)
    schedule = FlowMatchSchedule(cfg.schedule)
    shape = (cfg.transformer.in_channels, 4, 2, 2)
    pc = dataclasses.replace(recipe.ode_pairs, batch_size=2)
    sample_ode_pairs(teacher, text, schedule, shape, pc, ["a red circle", "a blue square"], tmp_path / "pairs",
                     progress=False)
    assert seen_teacher and all(s is True for s in seen_teacher)
    method = ODERegressionMethod(student, schedule, ODEPairStore(tmp_path / "pairs"), cfg.stream.chunk_frames,
                                 recipe.ode_init)
    method.loss("student", 0)
    assert seen_student and all(s is True for s in seen_student)


def test_self_forcing_marks_the_windows_that_start_the_stream(tmp_path):
    """A 3-chunk rollout judged in 2-frame windows (chunks of 2): the first window starts at the stream's first
    latent frame, the others do not; teacher and critic get the same marks."""
    recipe, cfg, vae, text = tiny_parts(tmp_path)
    cfg = _with_start(cfg)
    sc = dataclasses.replace(recipe.self_forcing, rollout_chunks=3, dmd_window_chunks=0, score_frames=2, batch_size=2)
    gen = StreamingGenerator(cfg, random_transformer(cfg, seed=4), vae, text, max_batch=2)
    teacher, critic = random_transformer(cfg, seed=3).requires_grad_(False), random_transformer(cfg, seed=3)
    seen_teacher, seen_critic = [], []
    _spy(teacher, seen_teacher)
    _spy(critic, seen_critic)
    m = SelfForcingDMD(gen, teacher, critic, ["a red circle", "a blue square"], sc, seed=0)
    batch = m._rollout(grad=False)
    windows = batch.windows.shape[0] // 2
    assert windows == 3 * cfg.stream.chunk_frames // 2
    assert batch.video_start.tolist() == [True, True] + [False, False] * (windows - 1)
    m.student_loss()
    assert torch.equal(seen_critic[-1], batch.video_start)
    assert torch.equal(seen_teacher[-1], torch.cat([batch.video_start, batch.video_start]))  # cond and uncond


def test_teacher_init_from_a_teacher_without_the_embedding_adds_it_at_zero(tmp_path):
    trained, grown = grow_teacher(tmp_path, {"transformer": {"video_start": True}})
    assert grown.config.video_start and grown.video_start_embedding.abs().max() == 0
    assert_same_function(trained, grown, video_start=True)
