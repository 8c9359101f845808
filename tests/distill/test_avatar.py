"""Talking faces: the procedural data, the avatar scorer (it must be able to fail), the avatar eval
on random weights, and the tiny-avatar recipe end to end."""

from pathlib import Path

import numpy as np
import pytest

from distill.avatar_data import AvatarDataset, frame_loudness_db
from distill.avatar_scoring import FaceMeter, lip_sync, score_avatar, stillness_ratio
from distill.config import load_config
from models.model_dir import resolve_model
from models.vae import VideoVAE

SPF = 1000  # 16 kHz at 16 fps


def test_samples_are_deterministic_prefixes_with_random_identities():
    ds = AvatarDataset(3)
    long, short = ds.sample(5, frames=40), ds.sample(5, frames=12)
    assert np.array_equal(long.video[:12], short.video) and np.array_equal(long.audio[:12 * SPF], short.audio)
    assert long.video.shape == (40, 64, 64, 3) and long.audio.shape == (40 * SPF,)
    ids = [ds.identity(i) for i in range(6)]
    assert len({i.skin for i in ids}) == 6 and len({round(i.eye_spacing, 3) for i in ids}) == 6
    assert long.params.silent[0] and long.params.opening[0] == 0  # every sample starts in silence, mouth closed


def test_the_mouth_follows_the_loudness_and_closes_on_silence():
    s = AvatarDataset(0).sample(1, frames=96)
    db = frame_loudness_db(s.audio, SPF)
    meter = FaceMeter(s.params.identity, s.video[0])
    opening = meter.opening(s.video)
    assert np.corrcoef(opening, db.clip(-40, None))[0, 1] > 0.9
    assert opening[s.params.silent].max() < 0.1 and opening[~s.params.silent].max() > 0.5


def _scores(video, sample):
    meter = FaceMeter(sample.params.identity, sample.video[0])
    return score_avatar(meter.opening(video), meter.identity_scores(video), sample.audio, SPF, 32)


def test_scorer_passes_ground_truth_and_fails_delay_noise_and_a_frozen_face():
    s = AvatarDataset(7).sample(2, frames=128)
    truth = _scores(s.video, s)
    assert truth.lip_sync > 0.95 and truth.offset == 0 and truth.stillness < 0.1 and truth.identity > 0.85
    assert truth.identity_worst_over_first > 0.9
    late = _scores(np.concatenate([np.repeat(s.video[:1], 2, 0), s.video[:-2]]), s)
    assert late.offset == 2 and late.lip_sync_at_zero < truth.lip_sync_at_zero - 0.2
    noise = _scores(np.random.default_rng(0).integers(0, 256, s.video.shape, dtype=np.uint8), s)
    assert noise.lip_sync < 0.5 and noise.identity < 0.3
    frozen = _scores(np.repeat(s.video[:1], len(s.video), 0), s)
    assert frozen.lip_sync < 0.1 and frozen.identity > 0.95  # identity kept, no lip-sync
    # a mouth that moves all the time regardless of the audio fails stillness
    chatter = np.abs(np.sin(np.arange(128) * 1.3))
    assert stillness_ratio(chatter, s.params.silent) > 0.5


def test_lip_sync_per_window_shows_where_a_stream_stops_following_the_audio():
    from distill.avatar_eval import window_means

    s = AvatarDataset(7).sample(2, frames=128)
    frozen_late = np.concatenate([s.video[:64], np.repeat(s.video[:1], 64, 0)])  # follows, then a still face
    score = _scores(frozen_late, s)
    spoken = [w for w in score.windows_lip_sync[:2] if w is not None]
    assert len(score.windows_lip_sync) == 4 and spoken and min(spoken) > 0.9
    assert all(w is None or w < 0.1 for w in score.windows_lip_sync[2:])
    assert any(w is not None for w in score.windows_lip_sync[2:])
    runs = [{"w": [0.8, None, 0.4]}, {"w": [0.6, None]}]
    assert window_means(runs, "w") == [pytest.approx(0.7), None, pytest.approx(0.4)]


def test_the_eval_gives_the_last_scored_frames_their_audio_look_ahead(monkeypatch):
    """A live session has the speech past the frame being made; the eval's streams must too, or a word
    starting in the last frames is scored against a mouth that never heard it."""
    import distill.avatar_eval as ae
    from models import load_generator

    gen = load_generator("tiny-avatar", device="cpu", max_batch=2)
    info = gen.info
    assert info.audio_lookahead_frames > 0
    short, long = ae.eval_face(3, 1.0, info)[2], ae.eval_face(3, 1.5, info)[2]
    np.testing.assert_allclose(long[:len(short)], short, atol=0.02)  # the same speech (its faint noise floor differs)
    assert np.abs(short).max() > 0.1
    asked = []
    real = ae.eval_face
    monkeypatch.setattr(ae, "eval_face", lambda i, seconds, g: asked.append(seconds) or real(i, seconds, g))
    ae.evaluate_avatar(gen, [0], seconds=1.0, window_seconds=1.0, ceiling=False)
    assert asked == [pytest.approx(1.0 + info.audio_lookahead_frames / info.fps)]


def test_mouth_by_loudness_shows_a_mouth_that_scatters_around_the_speech():
    from distill.avatar_scoring import opening_by_loudness

    s = AvatarDataset(7).sample(2, frames=128)
    truth = _scores(s.video, s).mouth_by_loudness
    assert [b["lo"] for b in truth] == [None, 0.0, 0.25, 0.5, 0.75] and sum(b["frames"] for b in truth) == 127
    loud = truth[-1]
    assert loud["frames"] > 10 and loud["mean"] > 0.5 and loud["sd"] < 0.15  # opens by a fixed amount per loudness
    target = np.clip(np.random.default_rng(0).random(400) * 1.2, 0, 1)
    steady = opening_by_loudness(target * 0.8, target)
    scattered = opening_by_loudness(target * np.random.default_rng(1).uniform(0.2, 1.4, 400), target)
    assert steady[-1]["mean"] == pytest.approx(scattered[-1]["mean"], abs=0.1)
    assert scattered[-1]["sd"] > 3 * steady[-1]["sd"]


def test_mouth_means_average_each_bin_over_the_faces():
    from distill.avatar_eval import mouth_line, mouth_means

    def run(mean, sd, frames):
        return {"mouth_by_loudness": [{"lo": None, "hi": 0.0, "frames": frames, "mean": mean, "sd": sd}]}

    out = mouth_means([run(0.2, 0.1, 10), run(0.4, 0.3, 5), run(None, None, 0)])
    assert out == [{"lo": None, "hi": 0.0, "frames": 15, "mean": pytest.approx(0.3), "sd": pytest.approx(0.2)}]
    assert mouth_line(out) == "silent 0.30±0.20" and mouth_means([]) == []


def test_lip_sync_offset_sign():
    target = np.random.default_rng(1).random(200)
    mouth = np.concatenate([np.zeros(3), target[:-3]])  # the mouth lags the audio by 3 frames
    assert lip_sync(mouth, target).offset == 3


def test_random_weights_score_low():
    from distill.avatar_eval import evaluate_avatar
    from models import load_generator

    gen = load_generator("tiny-avatar", device="cpu", max_batch=2)
    report = evaluate_avatar(gen, [0, 1], seconds=3.0, window_seconds=1.0)
    assert len(report["runs"]) == 2
    assert len(report["windows"]["identity"]) == 3 and len(report["windows"]["lip_sync"]) == 3
    assert len(report["mouth_by_loudness"]) == 5 and len(report["vae"]["mouth_by_loudness"]) == 5
    assert report["mean"]["identity"] < 0.5
    assert report["mean"]["lip_sync"] < 0.6
    assert report["vae"]["identity"] < 0.5  # a random VAE holds no face either


def test_the_vae_ceiling_scores_a_faithful_vae_high_and_one_that_loses_the_face_low(monkeypatch):
    """`vae_ceiling` scores what the VAE gives back: the ground truth itself (a perfect VAE) scores as the
    ground truth does; one that drops to the background after 1 s scores low, with a low worst / first."""
    import distill.stream_reconstruction as sr
    from distill.avatar_eval import vae_ceiling
    from models import load_generator

    info = load_generator("tiny-avatar", device="cpu", max_batch=1).info
    vae = VideoVAE.from_config(resolve_model("tiny-avatar").config.vae)
    monkeypatch.setattr(sr, "streamed_reconstruction", lambda vae, video, *a, **k: video.copy())
    perfect = vae_ceiling(vae, [0, 1], 3.0, info, window_seconds=1.0)
    assert perfect["identity"] > 0.85 and perfect["worst_over_first"] > 0.85 and perfect["lip_sync"] > 0.95

    def fading(vae, video, *a, **k):
        out = video.copy()
        out[info.fps:] = video[0, 0, 0]  # the corner's background colour from 1 s on
        return out

    monkeypatch.setattr(sr, "streamed_reconstruction", fading)
    lost = vae_ceiling(vae, [0, 1], 3.0, info, window_seconds=1.0)
    assert lost["identity"] < 0.6 and lost["worst_over_first"] < 0.5 and lost["lip_sync"] < 0.5


def test_avatar_recipes_parse():
    cfg = load_config("configs/shapes-avatar.yaml")
    m = cfg.model_config()
    assert m.audio is not None and m.stream.sink_frames == 1 and cfg.teacher.train_frames == 1 + m.stream.window_frames
    assert m.stream.chunk_frames == 1  # 0.25-s chunks: the audio-to-playable latency
    assert cfg.self_forcing.rollout_chunks * m.stream.chunk_frames > m.stream.sink_frames + m.stream.window_frames
    tiny = load_config("configs/tiny-avatar.yaml")
    assert tiny.model_config().audio is not None


def test_an_avatar_model_is_written_as_image_led_by_every_stage(tmp_path):
    """The face image is an avatar's identity: a stage run alone in a fresh folder (a VAE fine-tune on a copy)
    must not write framecast.json with supports_image false, as a shapes model before its image training."""
    from distill.pipeline import Pipeline

    overrides = {"out": str(tmp_path / "model"), "work_dir": str(tmp_path / "work")}
    assert Pipeline(load_config(Path("configs/tiny-avatar.yaml"), overrides), progress=False).model_cfg.supports_image
    assert not Pipeline(load_config(Path("configs/tiny.yaml"), overrides), progress=False).model_cfg.supports_image


@pytest.mark.slow
def test_tiny_avatar_recipe_trains_a_model_that_listens(tmp_path):
    from distill.pipeline import Pipeline
    from models import load_generator
    from models.audio import float_to_pcm_s16le
    from models.stream_api import ChunkInput, Conditioning

    cfg = load_config(Path("configs/tiny-avatar.yaml"), {"out": str(tmp_path / "model"), "work_dir": str(tmp_path / "work")})
    Pipeline(cfg, progress=False).run_all()
    for part in ("framecast.json", "transformer/config.json", "teacher/config.json", "vae/config.json"):
        assert (tmp_path / "model" / part).exists(), part
    gen = load_generator(str(tmp_path / "model"), device="cpu", max_batch=1)
    assert gen.info.inputs == ("audio",)
    face = AvatarDataset(0, None).sample(0, frames=1).video[0]
    speech = AvatarDataset(0).sample(0, frames=48).audio

    def run(audio):
        s = gen.open(Conditioning("a talking face", seed=1, image=face, inputs=("audio",)))
        try:
            feed = [[ChunkInput("audio", 0, float_to_pcm_s16le(audio))]] if audio is not None else [[]]
            return np.concatenate([gen.step([s], feed if k == 0 else [[]])[0].frames for k in range(3)]).astype(int)
        finally:
            gen.close_stream(s)

    assert np.abs(run(speech) - run(None)).max() > 0


def test_a_still_image_code_leads_the_teachers_clips_and_pairs(tmp_path):
    """stream.image_still_frames > 0: the teacher's latent dataset gains each face's start image in the code the
    stream commits it in (`still_leads` = `encode_start_image` of frame 0), its clips and the ODE pairs lead with
    it instead of the clip's first-frame code, and the leads are computed once."""
    import torch

    from distill.avatar_stages import image_lead_crops, still_leads
    from distill.ode_pairs import ODEPairStore
    from distill.pipeline import Pipeline
    from models.vae import uint8_to_video

    cfg = load_config(Path("configs/tiny-avatar.yaml"), {"out": str(tmp_path / "model"), "work_dir": str(tmp_path / "work"),
                                                         "overrides": {"stream": {"image_still_frames": 2}}})
    pipe = Pipeline(cfg, progress=False)
    for stage in ("vae", "teacher", "ode-pairs"):
        pipe.run(stage)
    data = torch.load(tmp_path / "work" / "teacher" / "latents.pt", weights_only=False)
    vae = pipe.load_vae()
    faces = pipe._avatar_faces()
    n = len(data["latents"])
    assert data["lead_still_frames"] == 2 and data["lead"].shape == (n, *data["latents"].shape[1:2], 1, *data["latents"].shape[3:])
    torch.testing.assert_close(data["lead"], still_leads(vae, faces, n, 2))
    with torch.no_grad():
        face0 = uint8_to_video(faces.sample(0, 1).video[None])[:, :, 0]
        torch.testing.assert_close(data["lead"][:1], vae.encode_start_image(face0, 2).float())
        assert (data["lead"][:, :, 0] - data["latents"][:, :, 0]).abs().mean() > 0.05  # not the first-frame code
    x0, _, _, idx = image_lead_crops(data, torch.Generator().manual_seed(0), 3, 4)
    torch.testing.assert_close(x0[:, :, :1], data["lead"][idx])
    pairs = ODEPairStore(tmp_path / "work" / "ode-pairs")
    first = pairs.get(list(range(len(pairs))), keys=("x0",))["x0"][:, :, 0]  # [P, C, h, w]
    dist = (first[:, None] - data["lead"][None, :, :, 0]).abs().mean(dim=(2, 3, 4))  # [P, N]
    assert dist.min(dim=1).values.max() < 1e-3  # every pair leads with one of the still leads
    data["lead"] += 1.0  # computed once: a second pass keeps what is saved
    again = pipe._with_still_leads(tmp_path / "work" / "teacher" / "latents.pt", data, vae)
    assert torch.equal(again["lead"], data["lead"])
    plain = Pipeline(load_config(Path("configs/tiny-avatar.yaml"), {"out": str(tmp_path / "model"),
                                                                    "work_dir": str(tmp_path / "work")}), progress=False)
    assert "lead" not in plain._with_still_leads(tmp_path / "work" / "teacher" / "latents.pt", dict(data), vae)
