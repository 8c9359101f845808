"""Audio classifier-free guidance for avatar distillation: the teacher's audio dropout and the guided score
(`distill/avatar_stages.py`), on the random-weight `tiny-avatar` preset."""

import dataclasses

import pytest
import torch

from distill.avatar_stages import AvatarFlowMatchMethod, guided_flow
from distill.config import TeacherStageConfig
from distill.dmd import cfg_flow
from models.config import preset
from models.model_dir import random_transformer
from models.schedule import FlowMatchSchedule


@pytest.fixture(scope="module")
def tiny():
    cfg = preset("tiny-avatar")
    return cfg, random_transformer(cfg, seed=0)


def _dataset(cfg, n=6, frames=6):
    t = cfg.transformer
    g = torch.Generator().manual_seed(0)
    return {
        "latents": torch.randn(n, t.in_channels, frames, cfg.latent_height, cfg.latent_width, generator=g),
        "audio": torch.randn(n, frames, t.audio_window, t.audio_dim, generator=g).half(),
        "text": torch.randn(n, 4, t.text_dim, generator=g).half(),
        "prompts": ["a talking face"] * n,
    }


def _audio_grad(model, cfg, dropout: float) -> float:
    """Summed |grad| of the audio layers after one teacher loss with this audio dropout."""
    tc = TeacherStageConfig(batch_size=4, train_frames=5, text_dropout=0.0, audio_dropout=dropout)
    null = torch.zeros(1, 4, cfg.transformer.text_dim)
    method = AvatarFlowMatchMethod(model, FlowMatchSchedule(cfg.schedule), _dataset(cfg), null, tc, seed=1)
    model.zero_grad(set_to_none=True)
    loss, _ = method.loss("teacher", 0)
    loss.backward()
    audio = [p.grad.abs().sum().item() for n, p in model.named_parameters() if "audio" in n and p.grad is not None]
    rest = [p.grad.abs().sum().item() for n, p in model.named_parameters() if "audio" not in n and p.grad is not None]
    assert sum(rest) > 0  # the step trained the model
    return sum(audio)


def test_audio_dropout_one_never_shows_the_teacher_audio(tiny):
    cfg, model = tiny
    model = random_transformer(cfg, seed=0)
    assert _audio_grad(model, cfg, 0.0) > 0  # with audio the audio layers learn
    assert _audio_grad(model, cfg, 1.0) == 0  # every clip with the audio layers skipped
    assert _audio_grad(model, cfg, 0.5) > 0


def test_audio_dropout_skips_the_audio_of_the_dropped_rows_only(tiny):
    """A batch with half the clips dropped gives, row by row, the full model's output on the kept clips and
    the audio-free model's output on the dropped ones."""
    from distill.avatar_stages import forward_dropping_audio

    cfg, model = tiny
    data = _dataset(cfg)
    x, audio, text = data["latents"][:4, :, :5], data["audio"][:4, :5].float(), data["text"][:4].float()
    t = torch.full((4, 5), 500.0)
    drop = torch.tensor([True, False, False, True])
    with torch.no_grad():
        out = forward_dropping_audio(model, x, t, text, audio, drop)
        full, none = model(x, t, text, audio=audio).float(), model(x, t, text).float()
    assert torch.allclose(out[~drop], full[~drop], atol=1e-5) and torch.allclose(out[drop], none[drop], atol=1e-5)
    assert not torch.allclose(full, none, atol=1e-3)  # the audio matters, so the check above can fail


def test_guided_score_without_audio_guidance_is_the_text_guided_score(tiny):
    cfg, model = tiny
    data = _dataset(cfg)
    x, audio, text = data["latents"][:2, :, :5], data["audio"][:2, :5].float(), data["text"][:2].float()
    null = torch.zeros(1, 4, cfg.transformer.text_dim)
    t = torch.full((2, 5), 700.0)
    with torch.no_grad():
        text_only, uncond, full = model(x, t, text).float(), model(x, t, null.expand_as(text)).float(), model(x, t, text, audio=audio).float()
        assert torch.allclose(guided_flow(model, x, t, text, audio, null, 3.0, 0.0), cfg_flow(text_only, uncond, 3.0), atol=1e-5)
        assert torch.allclose(guided_flow(model, x, t, text, audio, null, 1.0, 1.0), full, atol=1e-6)
        # audio guidance alone extrapolates from the audio-free flow through the audio one
        assert torch.allclose(guided_flow(model, x, t, text, audio, None, 1.0, 2.5), text_only + 2.5 * (full - text_only), atol=1e-5)
        both = guided_flow(model, x, t, text, audio, null, 3.0, 2.5)
    assert torch.allclose(both, uncond + 3.0 * (text_only - uncond) + 2.5 * (full - text_only), atol=1e-4)


class _FixedOutput(torch.nn.Module):
    """A 'model' whose flow prediction is one trainable tensor, so the loss's gradient on each element can be read."""

    def __init__(self, shape):
        super().__init__()
        self.out = torch.nn.Parameter(torch.randn(shape, generator=torch.Generator().manual_seed(3)))

    def forward(self, x, t, text, audio=None):
        return self.out


def _teacher_grad(cfg, mouth):
    tc = TeacherStageConfig(batch_size=3, train_frames=5, text_dropout=0.0, audio_dropout=0.0)
    data = _dataset(cfg)
    t = cfg.transformer
    model = _FixedOutput((3, t.in_channels, 5, cfg.latent_height, cfg.latent_width))
    method = AvatarFlowMatchMethod(model, FlowMatchSchedule(cfg.schedule), data, torch.zeros(1, 4, t.text_dim), tc,
                                   seed=1, mouth=mouth)
    loss, _ = method.loss("teacher", 0)
    loss.backward()
    gen = torch.Generator().manual_seed(1)  # the method's first draw: the clips of the batch
    idx = torch.randint(0, len(data["latents"]), (3,), generator=gen)
    return model.out.grad, idx


def test_teacher_mouth_weight_scales_each_elements_gradient_by_its_clips_map(tiny):
    """teacher.mouth_weight: the flow-matching loss is the weighted mean sum(w e^2) / sum(w), so against the plain
    MSE each element's gradient scales by w n / sum(w), with each clip's own map; frame 0 (the image) has none."""
    cfg, _ = tiny
    g = torch.Generator().manual_seed(5)
    mouth = 1.0 + 3.0 * (torch.rand(6, 1, 1, cfg.latent_height, cfg.latent_width, generator=g) < 0.3).float()
    plain, idx = _teacher_grad(cfg, None)
    weighted, idx2 = _teacher_grad(cfg, mouth)
    assert torch.equal(idx, idx2) and len(set(idx.tolist())) > 1
    assert plain[:, :, 0].abs().max() == 0 and weighted[:, :, 0].abs().max() == 0
    w = mouth[idx].expand(-1, plain.shape[1], 4, -1, -1)  # [B, C, 4, h, w] the weights of frames 1..
    expected = plain[:, :, 1:] * w * w.numel() / w.sum()
    torch.testing.assert_close(weighted[:, :, 1:], expected, rtol=1e-4, atol=1e-7)


def test_dataset_mouth_weights_are_each_faces_mouth_box():
    """Clip i of the teacher's latent dataset is face i: its map is 1 + weight on face i's mouth box."""
    from distill.avatar_data import AvatarDataset
    from distill.avatar_stages import dataset_mouth_weights, mouth_weight_map

    cfg = preset("shapes-avatar-untrained")
    faces = AvatarDataset(1)
    mouth = dataset_mouth_weights(faces, 5, cfg, 3.0)  # [5, 1, 1, h, w]
    assert mouth.shape == (5, 1, 1, cfg.latent_height, cfg.latent_width)
    for i in range(5):
        assert torch.equal(mouth[i], mouth_weight_map(faces.identity(i), cfg, faces.config.head_motion, 3.0))
    assert set(mouth.unique().tolist()) == {1.0, 4.0}
    assert len({m.numpy().tobytes() for m in mouth}) > 1  # each face has its own box
