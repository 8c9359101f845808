"""Each distillation stage, a few iterations on a 32x32 `tiny` model: its loss goes down.

A stage's loss is measured on the same fixed batches (method RNG state and global seed restored)
before and after a few optimizer steps of the shared `Trainer`.
"""

import copy
import dataclasses

import pytest
import torch

from distill.latents import build_latent_dataset, null_text
from distill.ode_init import ODERegressionMethod, frame_levels
from distill.ode_pairs import ODEPairStore, led_batches, sample_ode_pairs
from distill.shapes_data import StartImages
from models.generator import start_image_latents
from distill.self_forcing import SelfForcingDMD
from distill.teacher_stage import FlowMatchMethod
from tests.distill.tiny_recipe import tiny_recipe
from distill.trainer import Trainer
from distill.vae_stage import VAEMethod, with_latent_stats
from models.generator import StreamingGenerator
from models.model_dir import random_transformer
from models.schedule import FlowMatchSchedule
from models.text_encoders import build_text_encoder
from models.vae import VideoVAE


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    return tiny_recipe(tmp_path_factory.mktemp("distill"))


@pytest.fixture(scope="module")
def parts(recipe):
    torch.manual_seed(0)
    cfg = recipe.model_config()
    vae = VideoVAE.from_config(cfg.vae).eval()
    text = build_text_encoder(cfg.text_encoder)
    return cfg, vae, text


def fixed_loss(method, role, n=2):
    """Mean loss over n fixed batches (restores the method's state afterwards)."""
    state = copy.deepcopy(method.state_dict())
    method.load_state_dict(copy.deepcopy(state))
    torch.manual_seed(1234)
    with torch.no_grad():
        value = sum(method.loss(role, 0)[0].item() for _ in range(n)) / n
    method.load_state_dict(state)
    return value


def train(method, stage_cfg, tmp_path, steps):
    cfg = dataclasses.replace(stage_cfg, max_steps=steps, max_minutes=0, ckpt_every=10_000)
    return Trainer(method, cfg, tmp_path, progress=False).run()


def test_vae_stage_loss_goes_down(recipe, tmp_path):
    torch.manual_seed(0)
    vae = VideoVAE.from_config(recipe.model_config().vae)
    method = VAEMethod(vae, dataclasses.replace(recipe.vae, lr=2e-3), recipe.data, seed=0)
    before = fixed_loss(method, "vae")
    result = train(method, method.cfg, tmp_path, 12)
    after = fixed_loss(method, "vae")
    assert result["step"] == 12
    assert after < 0.9 * before, (before, after)
    # latent statistics land in the config (normalised latents have ~zero mean, unit std)
    stats = with_latent_stats(vae, recipe.data, 2, seed=0)
    assert stats.cfg.latents_mean is not None and len(stats.cfg.latents_std) == vae.z_dim
    video = torch.rand(2, 3, 5, 32, 32) * 2 - 1
    assert stats.encode(video).shape == (2, vae.z_dim, 2, 4, 4)


def test_teacher_stage_loss_goes_down(recipe, parts, tmp_path):
    cfg, vae, text = parts
    data = build_latent_dataset(vae, text, recipe.data, 4, 4, seed=0, batch=4, progress=False)
    assert data["latents"].shape == (4, cfg.transformer.in_channels, 4, 4, 4)
    assert data["text"].shape[0] == 4 and len(data["prompts"]) == 4
    later = build_latent_dataset(vae, text, recipe.data, 2, 4, seed=0, batch=4, progress=False, first=2)
    assert later["prompts"] == data["prompts"][2:]  # `first`: the same clips, from that index on
    torch.testing.assert_close(later["latents"], data["latents"][2:])
    teacher = random_transformer(cfg, seed=0)
    method = FlowMatchMethod(teacher, FlowMatchSchedule(cfg.schedule), data, null_text(text),
                             dataclasses.replace(recipe.teacher, lr=2e-3), seed=0)
    before = fixed_loss(method, "teacher", n=4)
    result = train(method, dataclasses.replace(method.cfg, ema_decay=0.5), tmp_path, 25)
    after = fixed_loss(method, "teacher", n=4)
    assert after < 0.8 * before, (before, after)
    assert set(result["losses"]) >= {"loss", "teacher_grad_norm"}


def test_teacher_training_sigmas_follow_teacher_shift_or_the_schedules(recipe, parts):
    """sigma = shift(u), u ~ U(0, 1): the median sigma is shift / (1 + shift) (u = 0.5)."""
    from models.schedule import shift_sigma

    cfg, vae, text = parts
    data = {"latents": torch.zeros(2, cfg.transformer.in_channels, 4, 4, 4), "text": torch.zeros(2, 4, 8)}
    schedule = FlowMatchSchedule(cfg.schedule)
    assert schedule.cfg.shift != 1.0
    for shift, expected in ((1.0, 1.0), (0.0, schedule.cfg.shift)):  # 0: the schedule's own
        method = FlowMatchMethod(random_transformer(cfg, seed=0), schedule, data, torch.zeros(4, 8),
                                 dataclasses.replace(recipe.teacher, shift=shift, train_frames=4), seed=0)
        sigma = method.train_sigma(20000)
        assert sigma.median().item() == pytest.approx(shift_sigma(0.5, expected), abs=0.01)
        assert 0.0 <= sigma.min().item() and sigma.max().item() <= 1.0


def test_image_led_teacher_crops_lead_with_the_clean_first_frame_and_score_the_rest(recipe, parts):
    """teacher.image_lead_share = 1: every crop is [the clip's latent frame 0 | frames from after it], the model
    sees frame 0 clean (timestep 0, x_t equal to it), and no loss falls on it; with share 0 crops are plain
    windows, noised as one, and frame 0's error counts."""
    cfg, vae, text = parts
    c = cfg.transformer.in_channels
    n, f = 3, 5
    frame_ids = torch.arange(n * f, dtype=torch.float32).view(n, 1, f, 1, 1)  # clip i, frame j -> i * f + j
    null = null_text(text)  # [L, D]
    data = {"latents": frame_ids.expand(n, c, f, 4, 4).clone(), "text": null.expand(n, *null.shape[-2:]).clone()}
    schedule = FlowMatchSchedule(cfg.schedule)
    seen, losses = [], {}
    for share in (1.0, 0.0):
        model = random_transformer(cfg, seed=0)
        forward = model.forward

        def spy(x, t, text, offset=0.0, **kw):
            seen.append((share, x.detach().clone(), t.detach().clone()))
            out = forward(x, t, text, **kw)
            return torch.cat([out[:, :, :1] + offset, out[:, :, 1:]], dim=2)  # a wrong frame-0 prediction

        method = FlowMatchMethod(model, schedule, data, null,
                                 dataclasses.replace(recipe.teacher, image_lead_share=share, train_frames=3, batch_size=6), seed=0)
        x0, _, led, _, _ = method.batch()
        ids = x0[:, 0, :, 0, 0]  # [B, 3] frame ids
        if share == 1.0:
            assert led.all()
            assert (ids[:, 0] % f == 0).all()  # each clip's frame 0 leads
            assert ((ids[:, 1] % f) >= 1).all() and (ids[:, 2] - ids[:, 1] == 1).all()
            assert (ids[:, 1] // f == ids[:, 0] // f).all()  # from the same clip
        else:
            assert not led.any() and (ids[:, 1:] - ids[:, :-1] == 1).all()
        for offset in (0.0, 100.0):
            model.forward = lambda x, t, text, o=offset, **kw: spy(x, t, text, offset=o, **kw)
            torch.manual_seed(0)
            method.gen.manual_seed(1)
            losses[share, offset] = method.loss("teacher", 0)[0].item()
        _, x_t, t = seen[-1]
        if share == 1.0:
            x_0 = x_t  # the clean lead: x_t's frame 0 is a frame id
            assert t[:, 0].abs().max() == 0 and t[:, 1:].min() > 0
            assert torch.equal(x_0[:, 0, 0, 0, 0] % f, torch.zeros(6))
        else:
            assert t.ndim == 1
    assert losses[1.0, 100.0] == pytest.approx(losses[1.0, 0.0])  # frame 0 is out of the loss
    assert losses[0.0, 100.0] > losses[0.0, 0.0] + 100


def test_adjacent_image_led_crops_continue_the_image_at_once(recipe, parts):
    """teacher.image_lead_adjacent: every led crop is [the clip's frame 0 | its frames 1, 2, ...] (a stream's first
    chunk follows its image at once); without it the frames after the image start anywhere after it."""
    cfg, _, text = parts
    c, n, f = cfg.transformer.in_channels, 4, 6
    frame_ids = torch.arange(n * f, dtype=torch.float32).view(n, 1, f, 1, 1)  # clip i, frame j -> i * f + j
    null = null_text(text)
    data = {"latents": frame_ids.expand(n, c, f, 4, 4).clone(), "text": null.expand(n, *null.shape[-2:]).clone()}
    firsts = {}
    for adjacent in (True, False):
        teacher = dataclasses.replace(recipe.teacher, image_lead_share=1.0, image_lead_adjacent=adjacent,
                                      train_frames=3, batch_size=64)
        method = FlowMatchMethod(random_transformer(cfg, seed=0), FlowMatchSchedule(cfg.schedule), data, null, teacher)
        ids = method.batch()[0][:, 0, :, 0, 0] % f  # [B, 3] frame index within its clip
        assert (ids[:, 0] == 0).all() and (ids[:, 2] - ids[:, 1] == 1).all()
        firsts[adjacent] = set(ids[:, 1].tolist())
    assert firsts[True] == {1} and firsts[False] == {1, 2, 3, 4}


def test_ode_pairs_and_ode_init_loss_goes_down(recipe, parts, tmp_path):
    cfg, vae, text = parts
    schedule = FlowMatchSchedule(cfg.schedule)
    teacher = random_transformer(cfg, seed=1)
    prompts = ["a red circle", "a blue square on black", "two green triangles", "a yellow circle"]
    shape = (cfg.transformer.in_channels, 4, 2, 2)
    pc = dataclasses.replace(recipe.ode_pairs, batch_size=2)
    assert sample_ode_pairs(teacher, text, schedule, shape, pc, prompts, tmp_path / "pairs", progress=False) == 4
    pairs = ODEPairStore(tmp_path / "pairs")
    k = schedule.num_student_steps
    assert len(pairs) == 4 and pairs.state_shape == (k, *shape) and pairs.prompts([3]) == prompts[3:]
    first = pairs.get([0, 3])
    # the first kept state is the pure noise at sigma 1: batch j's noise is seeded by its first pair index
    noise = torch.randn((2, *shape), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(first["states"][0, 0], noise[0]) and first["x0"].shape == (2, *shape)
    # one shard per batch; ranks split the batches (rank 1 of 2 writes batch 1), and a rerun skips existing shards
    assert sorted(p.name for p in (tmp_path / "pairs").iterdir()) == ["batch-000000.safetensors", "batch-000001.safetensors"]
    other = tmp_path / "rank1"
    assert sample_ode_pairs(teacher, text, schedule, shape, pc, prompts, other, progress=False, rank=1, world_size=2) == 2
    assert torch.equal(ODEPairStore(other).get([0, 1])["x0"], pairs.get([2, 3])["x0"])  # the same pairs on any rank
    assert sample_ode_pairs(teacher, text, schedule, shape, pc, prompts, tmp_path / "pairs", progress=False) == 0
    # ODE init: the student (a different random init, to leave room to learn) regresses the pairs
    student = random_transformer(cfg, seed=2)
    method = ODERegressionMethod(student, schedule, pairs, cfg.stream.chunk_frames,
                                 dataclasses.replace(recipe.ode_init, lr=2e-3), seed=0)
    before = fixed_loss(method, "student", n=4)
    train(method, method.cfg, tmp_path / "ode-init", 25)
    after = fixed_loss(method, "student", n=4)
    assert after < 0.8 * before, (before, after)


def test_image_led_ode_pairs_hold_the_start_image_and_ode_init_keeps_it_clean(recipe, parts, tmp_path):
    """`ode_pairs.image_lead_share`: a share of the batches hold their prompt's clip frame, encoded as a stream
    encodes its start image, clean (timestep 0) as frame 0 all along the teacher's ODE; ODE init runs those rows
    with it as a clean lead chunk of its own and no loss on it, the other rows as before."""
    cfg, vae, text = parts
    schedule = FlowMatchSchedule(cfg.schedule)
    assert led_batches(4, 0.5) == {1, 3} and led_batches(3, 0.0) == set() and led_batches(2, 1.0) == {0, 1}
    teacher = random_transformer(cfg, seed=1)
    images = StartImages(5, recipe.data)
    prompts = [images.shapes.sample(i, frames=1).prompt for i in range(4)]
    encoded = []

    def encode(image):
        encoded.append(start_image_latents(vae, cfg.stream, image)[1])
        return encoded[-1]

    seen = []
    forward = teacher.forward

    def spy(x, t, text_states, **kw):
        seen.append((x.clone(), t.clone()))
        return forward(x, t, text_states, **kw)

    teacher.forward = spy
    shape = (cfg.transformer.in_channels, 4, cfg.latent_height, cfg.latent_width)
    pc = dataclasses.replace(recipe.ode_pairs, batch_size=2, image_lead_share=0.5)
    assert sample_ode_pairs(teacher, text, schedule, shape, pc, prompts, tmp_path / "pairs", progress=False,
                            images=images, encode_image=encode) == 4
    pairs = ODEPairStore(tmp_path / "pairs")
    assert pairs.lead.tolist() == [False, False, True, True]
    lead = torch.cat(encoded)  # [2, C, 1, h, w] prompts 2 and 3's start images
    assert len(encoded) == 2 and any(torch.equal(lead[0], start_image_latents(vae, cfg.stream, images(2, k))[1][0])
                                     for k in range(images.frames))
    led = pairs.get([2, 3])
    assert torch.allclose(led["x0"][:, :, :1], lead) and torch.allclose(led["states"][:, :, :, :1], lead[:, None].expand(-1, led["states"].shape[1], -1, -1, -1, -1))
    calls = len(seen) // 2  # the plain batch's teacher calls, then the led batch's
    for x, t in seen[:calls]:  # plain: one timestep per clip, frame 0 noised like the others
        assert t.ndim == 1 and (t > 0).all()
    for x, t in seen[calls:]:  # led: the teacher sees the clean image at timestep 0 at every step, both CFG branches
        assert (t[:, 0] == 0).all() and (t[:, 1:] > 0).all()
        assert torch.allclose(x[:, :, :1], torch.cat([lead, lead]))
    assert not torch.allclose(pairs.get([0])["x0"][:, :, :1], lead[:1])
    # ODE init: the led rows' frame 0 is the clean image at sigma 0, their chunks counted after it, run with lead_frames=1
    student = random_transformer(cfg, seed=2)
    method = ODERegressionMethod(student, schedule, pairs, cfg.stream.chunk_frames,
                                 dataclasses.replace(recipe.ode_init, lr=2e-3, batch_size=8), seed=0)
    state = copy.deepcopy(method.state_dict())
    x_in, sigma, x0, _, rows = method.batch()
    assert rows.any() and (~rows).any()
    assert torch.equal(x_in[rows][:, :, 0], x0[rows][:, :, 0]) and (sigma[rows][:, 0] == 0).all()
    assert (sigma[~rows] > 0).all() and (sigma[rows][:, 1:] > 0).all()
    calls = []
    student_forward = student.forward

    def student_spy(x, t, text_states, **kw):
        calls.append((x.shape[0], kw.get("lead_frames", 0)))
        return student_forward(x, t, text_states, **kw)

    student.forward = student_spy
    # the loss leaves out the led rows' frame 0 (a target far off there changes nothing) and keeps every other frame
    batch = method.batch

    def loss_with_target(shift_led: float, shift_plain: float) -> float:
        def moved():
            x_in, sigma, x0, text_states, rows = batch()
            x0 = x0.clone()
            x0[rows, :, 0] += shift_led
            x0[~rows, :, 0] += shift_plain
            return x_in, sigma, x0, text_states, rows

        method.batch = moved
        method.load_state_dict(copy.deepcopy(state))
        with torch.no_grad():
            return method.loss("student", 0)[0].item()

    loss = loss_with_target(0.0, 0.0)
    assert sorted({k for _, k in calls}) == [0, 1] and sum(n for n, k in calls if k == 1) == int(rows.sum())
    assert loss_with_target(1000.0, 0.0) == pytest.approx(loss, rel=1e-6)
    assert loss_with_target(0.0, 1000.0) > 100 * loss
    method.batch, student.forward = batch, student_forward
    method.load_state_dict(state)
    assert frame_levels(torch.tensor([[1, 2]]), 2, 4, torch.tensor([True])).tolist() == [[0, 1, 1, 2]]
    assert frame_levels(torch.tensor([[1, 2]]), 2, 4).tolist() == [[1, 1, 2, 2]]
    before = fixed_loss(method, "student", n=4)
    train(method, method.cfg, tmp_path / "ode-init", 25)
    assert fixed_loss(method, "student", n=4) < 0.8 * before


def test_self_forcing_critic_learns(recipe, parts, tmp_path):
    cfg, vae, text = parts
    teacher = random_transformer(cfg, seed=3).requires_grad_(False)
    critic = copy.deepcopy(teacher).requires_grad_(True)
    student = random_transformer(cfg, seed=4)
    sc = dataclasses.replace(recipe.self_forcing, critic_lr=3e-3, lr=1e-3)
    gen = StreamingGenerator(cfg, student, vae, text, max_batch=sc.batch_size)
    method = SelfForcingDMD(gen, teacher, critic, ["a red circle", "a blue square"], sc, seed=0)
    # the critic's flow-matching loss on (fixed) student rollouts
    before = fixed_loss(method, "critic", n=3)
    trainer = Trainer(method, dataclasses.replace(sc, max_steps=4, ckpt_every=10_000), tmp_path, progress=False)
    result = trainer.run()
    after = fixed_loss(method, "critic", n=3)
    assert after < before, (before, after)
    assert {"critic_loss", "dmd_loss", "real_gap"} <= set(result["losses"])
    # the student's direction, its EMA and the frozen real score: tests/distill/test_self_forcing_dmd.py


def test_vae_decoder_stage_trains_only_the_decoder(recipe, tmp_path):
    from distill.vae_stage import DecoderFinetuneMethod

    torch.manual_seed(0)
    vae = VideoVAE.from_config(recipe.model_config().vae)
    encoder_before = {k: v.clone() for k, v in vae.model.encoder.state_dict().items()}
    method = DecoderFinetuneMethod(vae, dataclasses.replace(recipe.vae_decoder, lr=2e-3, batch_size=2), recipe.data)
    before = fixed_loss(method, "vae")
    train(method, method.cfg, tmp_path, 12)
    after = fixed_loss(method, "vae")
    assert after < 0.9 * before, (before, after)
    assert all(torch.equal(v, encoder_before[k]) for k, v in vae.model.encoder.state_dict().items())


def test_motion_weight_weighs_what_moves_over_what_stands_still():
    """object_weights: a still object outweighs the background by 1 + object_weight; with motion_weight a pixel
    the moving object crosses (unlike its median over the clip) outweighs the still object's."""
    from distill.vae_stage import object_weights

    video = -torch.ones(1, 3, 5, 16, 16)  # black background
    video[..., 2:5, 2:5] = 1.0  # a still white square
    for t in range(5):
        video[0, :, t, 10:12, 2 + 2 * t:4 + 2 * t] = 1.0  # a bar moving right

    def ratios(w):
        return (w[0, 0, 0, 3, 3] / w[0, 0, 0, 14, 14]).item(), (w[0, 0, 0, 10, 2] / w[0, 0, 0, 3, 3]).item()

    still_over_bg, moving_over_still = ratios(object_weights(video, 4.0))
    assert still_over_bg == pytest.approx(5.0) and moving_over_still == pytest.approx(1.0)
    w = object_weights(video, 4.0, motion_weight=10.0)
    still_over_bg, moving_over_still = ratios(w)
    assert still_over_bg == pytest.approx(5.0) and moving_over_still == pytest.approx(15.0 / 5.0)
    assert w.mean().item() == pytest.approx(1.0)
    w = object_weights(video, 4.0, first_frame_weight=8.0)  # frame 0: the start image's
    assert (w[0, 0, 0, 14, 14] / w[0, 0, 1, 14, 14]).item() == pytest.approx(8.0)
    assert (w[0, 0, 1, 14, 14] / w[0, 0, 1, 3, 3]).item() == pytest.approx(1 / 5.0)


def test_latent_noise_perturbs_each_channel_by_its_own_std(recipe):
    """latent_noise: the decoder's input latents get noise in units of each channel's latent std, at a
    level drawn per clip from U(0, latent_noise) (rms latent_noise / sqrt(3) stds); the target video is
    untouched."""
    from distill.vae_stage import DecoderFinetuneMethod

    cfg = recipe.model_config().vae
    std = torch.linspace(0.5, 2.0, cfg.z_dim)
    vae = VideoVAE.from_config(dataclasses.replace(cfg, latents_mean=[0.0] * cfg.z_dim, latents_std=std.tolist()))
    method = DecoderFinetuneMethod(vae, dataclasses.replace(recipe.vae_decoder, latent_noise=0.6), recipe.data)
    z = torch.zeros(256, cfg.z_dim, 3, 4, 4)
    noise = method.perturb(z) - z  # [B, C, F, h, w]
    rms = noise.pow(2).mean(dim=(0, 2, 3, 4)).sqrt() / std  # per channel, in its stds
    assert torch.allclose(rms, torch.full_like(rms, 0.6 / 3 ** 0.5), rtol=0.15), rms


def test_decoder_cut_clips_cut_latents_and_video_at_the_same_place():
    """cut_share: a clip's latents switch to another clip's at latent frame j, and its target video at
    the first frame latent j decodes to. Checked with the shipped shapes VAE's causal encoder: encoding
    the cut video gives the first clip's latents exactly before j (nothing of the second clip reaches
    them) and, from j on, latents nearer the second clip's than the first's."""
    from distill.config import ShapesDataConfig, VAEDecoderStageConfig
    from distill.vae_stage import DecoderFinetuneMethod
    from models.model_dir import resolve_model

    vae = VideoVAE.from_pretrained(resolve_model("shapes").path / "vae").float()
    cfg = VAEDecoderStageConfig(batch_size=3, clip_frames=25, crop=0, cut_share=1.0, cut_after=2)
    method = DecoderFinetuneMethod(vae, cfg, ShapesDataConfig(width=64, height=64), seed=3)
    video = method.batch()
    with torch.no_grad():
        z = vae.model.encode(video).latent_dist.mean  # [B, C, 7, 16, 16]
        state = copy.deepcopy(method.state_dict())
        others = method.batch()  # what cut_clips draws next
        method.load_state_dict(state)
        cut_video, cut_z = method.cut_clips(video, z)
        z_other = vae.model.encode(others).latent_dist.mean
        encoded = vae.model.encode(cut_video).latent_dist.mean
    for i in range(video.shape[0]):
        j = next(f for f in range(z.shape[2]) if not torch.equal(cut_z[i, :, f], z[i, :, f]))  # the cut
        assert j >= cfg.cut_after and torch.equal(cut_z[i, :, j:], z_other[i, :, j:])
        first = 1 + vae.temporal_compression * (j - 1)
        assert torch.equal(cut_video[i, :, :first], video[i, :, :first])
        assert torch.equal(cut_video[i, :, first:], others[i, :, first:])
        torch.testing.assert_close(encoded[i, :, :j], z[i, :, :j], rtol=0, atol=1e-5)
        for f in range(j, z.shape[2]):
            assert (encoded[i, :, f] - z_other[i, :, f]).norm() < (encoded[i, :, f] - z[i, :, f]).norm()


def test_decoder_latents_encoded_in_windows_as_the_teachers_clips_are():
    """encode_window: a long clip's latents come from encoder passes at most `window` latent frames long, each
    after the first starting one video frame early (its lone latent dropped): the first window equals the
    whole encode's start (the encoder is causal); later latents equal those of their own short pass."""
    from distill.config import ShapesDataConfig, VAEDecoderStageConfig
    from distill.vae_stage import DecoderFinetuneMethod, encode_in_windows
    from models.model_dir import resolve_model

    torch.manual_seed(0)
    vae = VideoVAE.from_config(resolve_model("tiny").config.vae).eval()
    tc = vae.temporal_compression
    video = torch.rand(1, 3, 1 + 4 * tc, 16, 16) * 2 - 1  # 5 latent frames
    with torch.no_grad():
        whole = vae.model.encode(video).latent_dist.mean
        windowed = encode_in_windows(vae, video, 3)  # frames 0..2 from the start, then 3..4 from video frame 2 tc
        second = vae.model.encode(video[:, :, 2 * tc:]).latent_dist.mean  # latents of [frame 2tc | 2 tc frames]
    assert windowed.shape == whole.shape
    torch.testing.assert_close(windowed[:, :, :3], whole[:, :, :3], rtol=0, atol=1e-6)
    torch.testing.assert_close(windowed[:, :, 3:], second[:, :, 1:], rtol=0, atol=1e-6)
    assert not torch.allclose(windowed[:, :, 3:], whole[:, :, 3:], atol=1e-3)
    torch.testing.assert_close(encode_in_windows(vae, video, 5), whole, rtol=0, atol=1e-6)  # one window: whole
    with pytest.raises(ValueError, match="encode_window"):
        encode_in_windows(vae, video, 1)
    cfg = VAEDecoderStageConfig(batch_size=1, clip_frames=1 + 4 * tc, crop=16, encode_window=3)
    method = DecoderFinetuneMethod(vae, cfg, ShapesDataConfig(width=16, height=16))
    clips = method.batch()
    torch.testing.assert_close(method.encode(clips), encode_in_windows(vae, clips, 3), rtol=0, atol=0)


def test_teacher_init_from_starts_the_run_from_a_trained_teacher(tmp_path):
    """teacher.init_from: the stage starts from that directory's teacher/ (lr 0: it ends there too), not from
    random weights; a teacher of another architecture is refused."""
    from distill.pipeline import Pipeline, StageError
    from models.model_dir import save_model_dir
    from tests.distill.tiny_recipe import tiny_recipe

    base = tiny_recipe(tmp_path / "a")
    cfg = base.model_config()
    torch.manual_seed(0)
    save_model_dir(tmp_path / "a" / "model", cfg, vae=VideoVAE.from_config(cfg.vae).eval())
    start = random_transformer(cfg, seed=7)
    save_model_dir(tmp_path / "trained", cfg, teacher=start)

    def run(**teacher):
        recipe = tiny_recipe(tmp_path / "a", teacher={"max_steps": 1, "lr": 0.0, "num_clips": 4, **teacher})
        Pipeline(recipe, progress=False).run("teacher")
        out = random_transformer(cfg, seed=1)
        out.load_state_dict(type(out).from_pretrained(tmp_path / "a" / "model" / "teacher").state_dict())
        return out.state_dict()

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    assert same(run(init_from=str(tmp_path / "trained")), start.state_dict())
    assert not same(run(), start.state_dict())
    other = dataclasses.replace(cfg, transformer=dataclasses.replace(cfg.transformer, num_layers=cfg.transformer.num_layers + 1))
    save_model_dir(tmp_path / "other", other, teacher=random_transformer(other, seed=0))
    with pytest.raises(StageError, match="architecture"):
        run(init_from=str(tmp_path / "other"))


def test_teacher_init_from_a_shallower_teacher_deepens_it(tmp_path):
    """A recipe with more layers than the teacher it starts from: the stage deepens that teacher with identity
    blocks (distill/grow.py), so at lr 0 the saved deeper teacher predicts what the trained one did."""
    from tests.distill.tiny_recipe import assert_same_function, grow_teacher, tiny_recipe

    layers = tiny_recipe(tmp_path / "a").model_config().transformer.num_layers + 2
    trained, grown = grow_teacher(tmp_path, {"transformer": {"num_layers": layers}})
    assert len(grown.blocks) == layers
    assert_same_function(trained, grown)


def test_latent_object_masks_mark_the_latent_pixels_the_objects_cover():
    """distill/latents.latent_object_masks against the clips' own ground truth: the latent pixel under each
    object's centre is marked (video frame 0 -> latent frame 0, frames 1 + 4 (k - 1) .. 4k -> latent frame k),
    and a latent pixel whose 4x4 block is further than radius + 1 from every centre in those frames is not."""
    from distill.config import ShapesDataConfig
    from distill.latents import latent_object_masks
    from distill.shapes_data import ShapesDataset

    data_cfg = ShapesDataConfig(max_objects=3)
    masks = latent_object_masks(data_cfg, 5, 6, 4, 4, 4)  # [6, 1, 4, 16, 16]
    assert masks.shape == (6, 1, 4, 16, 16) and masks.dtype == torch.bool
    shapes = ShapesDataset(5, dataclasses.replace(data_cfg, frames=13))
    ys, xs = torch.meshgrid(torch.arange(16) * 4 + 1.5, torch.arange(16) * 4 + 1.5, indexing="ij")  # block centres
    for i in range(6):
        objects = shapes.sample(i).params.objects
        for k in range(4):
            frames = [0] if k == 0 else list(range(1 + 4 * (k - 1), 1 + 4 * k))
            near = torch.zeros(16, 16, dtype=torch.bool)
            for obj in objects:
                for t in frames:
                    x, y = obj.centres[t]
                    assert masks[i, 0, k, int(y) // 4, int(x) // 4], (i, k, t)
                    # a block's farthest point is 2 * sqrt(2) from its centre
                    near |= ((xs - x) ** 2 + (ys - y) ** 2).sqrt() <= obj.radius + 1 + 2 * 2 ** 0.5
            assert not (masks[i, 0, k] & ~near).any(), (i, k)


class _ZeroFlow(torch.nn.Module):
    """A teacher that predicts no flow: its error is the flow-matching target itself."""

    def forward(self, x, t, text, **kw):
        return torch.zeros_like(x)


def _object_weight_setup(parts):
    """(data, null, objects): 2 clips of 4 latent frames whose frames 0-1 are objects with large targets
    (eps - x0 ~ eps - 10, mean square 101) and frames 2-3 background (~ eps, mean square 1)."""
    cfg, _, text = parts
    c, n, f = cfg.transformer.in_channels, 2, 4
    null = null_text(text)
    latents = torch.zeros(n, c, f, 4, 4)
    latents[:, :, :2] = 10.0
    objects = torch.zeros(n, 1, f, 4, 4, dtype=torch.bool)
    objects[:, :, :2] = True
    return {"latents": latents, "text": null.expand(n, *null.shape[-2:]).clone()}, null, objects


def _object_weighted_loss(recipe, parts, **teacher) -> float:
    cfg = parts[0]
    data, null, objects = _object_weight_setup(parts)
    teacher = dataclasses.replace(recipe.teacher, **{"train_frames": 4, "batch_size": 256, "image_lead_share": 0.0,
                                                     **teacher})
    method = FlowMatchMethod(_ZeroFlow(), FlowMatchSchedule(cfg.schedule), data, null, teacher, seed=0, objects=objects)
    return method.loss("teacher", 0)[0].item()


def test_object_weighted_teacher_loss_is_the_weighted_mean(recipe, parts):
    """teacher.object_weight w: the flow-matching error of latent pixels an object covers weighs 1 + w
    (sum(w e^2) / sum(w)). With a model that predicts 0, clips whose object frames carry a large error and the
    others a small one: the loss moves from the plain mean to the weighted mean exactly as the weights say."""
    big, small = 101.0, 1.0  # E[(eps - 10)^2], E[eps^2]
    assert _object_weighted_loss(recipe, parts, object_weight=0.0) == pytest.approx((big + small) / 2, rel=0.05)
    assert _object_weighted_loss(recipe, parts, object_weight=4.0) == pytest.approx((5 * big + small) / 6, rel=0.05)
    data, null, objects = _object_weight_setup(parts)
    schedule = FlowMatchSchedule(parts[0].schedule)
    with pytest.raises(ValueError, match="object masks"):
        FlowMatchMethod(_ZeroFlow(), schedule, data, null, recipe.teacher, objects=objects[:, :, :2])
    with pytest.raises(ValueError, match="needs the clips' object masks"):
        FlowMatchMethod(_ZeroFlow(), schedule, data, null, dataclasses.replace(recipe.teacher, object_weight=1.0))


def test_teacher_stage_trains_with_object_weight(tmp_path):
    """The `teacher` stage with teacher.object_weight builds its clips' object masks on the VAE's grid and trains."""
    from distill.pipeline import Pipeline
    from models.model_dir import save_model_dir

    cfg = tiny_recipe(tmp_path).model_config()
    torch.manual_seed(0)
    save_model_dir(tmp_path / "model", cfg, vae=VideoVAE.from_config(cfg.vae).eval())
    recipe = tiny_recipe(tmp_path, teacher={"max_steps": 2, "num_clips": 4, "object_weight": 3.0})
    result = Pipeline(recipe, progress=False).run("teacher")
    assert (tmp_path / "model" / "teacher" / "config.json").exists()
    assert result["step"] == 2 and result["losses"]["loss"] > 0


def test_object_weight_min_sigma_weighs_only_the_noisier_samples(recipe, parts):
    """teacher.object_weight_min_sigma: samples drawn below it keep the plain mean. Above every sigma (> 1) the
    weighted loss is the plain one; at 0 it is the weighted one (the test above)."""
    plain = _object_weighted_loss(recipe, parts, object_weight=0.0, shift=1.0)
    assert _object_weighted_loss(recipe, parts, object_weight=4.0, object_weight_min_sigma=1.1, shift=1.0) == \
        pytest.approx(plain, rel=1e-6)
    # half the samples (shift 1: sigma uniform) weighted: between the plain (51) and the weighted (84.3) mean
    half = _object_weighted_loss(recipe, parts, object_weight=4.0, object_weight_min_sigma=0.5, shift=1.0)
    assert plain * 1.2 < half < (5 * 101 + 1) / 6 * 0.97


def test_object_weight_led_false_keeps_the_plain_mean_on_image_led_crops(recipe, parts):
    """teacher.object_weight_led False: image-led crops (here all of them) keep the plain mean, however large the
    object weight; True (the default) weighs their objects as the text crops' are."""
    led = dict(image_lead_share=1.0, image_lead_adjacent=True)
    plain = _object_weighted_loss(recipe, parts, object_weight=0.0, **led)
    # led crops: clean frame 0 left out, then frame 1 (an object, ~101) and frames 2-3 (background, ~1)
    assert plain == pytest.approx((101 + 1 + 1) / 3, rel=0.05)
    assert _object_weighted_loss(recipe, parts, object_weight=4.0, object_weight_led=False, **led) == \
        pytest.approx(plain, rel=1e-6)
    assert _object_weighted_loss(recipe, parts, object_weight=4.0, **led) == pytest.approx((5 * 101 + 2) / 7, rel=0.05)
    # text crops are weighted either way
    assert _object_weighted_loss(recipe, parts, object_weight=4.0, object_weight_led=False) == \
        pytest.approx((5 * 101 + 1) / 6, rel=0.05)
