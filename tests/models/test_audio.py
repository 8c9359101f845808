"""Audio input of avatar models: the PCM contract, the encoders, the stream's buffer, the windows
per latent frame, and the transformer's audio adapter."""

import numpy as np
import pytest
import torch

from models.audio import (AudioBuffer, AudioConditioner, MelEncoder, build_audio_encoder, float_to_pcm_s16le,
                          mel_filterbank, pcm_s16le_to_float)
from models.config import preset
from models.model_dir import random_transformer


def tone(seconds, freq=220.0, amp=0.5, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_pcm_s16le_round_trip_and_odd_length():
    x = np.array([0.0, 0.5, -0.5, -1.0, 0.999], dtype=np.float32)
    data = float_to_pcm_s16le(x)
    assert len(data) == 10 and np.frombuffer(data, "<i2")[1] == 16384
    np.testing.assert_allclose(pcm_s16le_to_float(data), x, atol=1 / 32768)
    with pytest.raises(ValueError):
        pcm_s16le_to_float(b"\x00\x01\x02")


def test_buffer_places_pieces_by_sample_index_zero_fills_and_drops_consumed():
    buf = AudioBuffer(16000)
    buf.write(10, np.ones(5, np.float32))
    buf.write(2, np.full(3, 2.0, np.float32))  # out of order
    got = buf.read(0, 20)
    assert got.tolist() == [0, 0, 2, 2, 2, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    buf.write(12, np.full(2, 3.0, np.float32))  # overlap: the later piece wins
    assert buf.read(10, 15).tolist() == [1, 1, 3, 3, 1]
    buf.trim(11)
    buf.write(8, np.full(5, 4.0, np.float32))  # 8..10 consumed: dropped, 11..12 kept
    assert buf.start == 11 and buf.read(9, 14).tolist() == [0, 0, 4, 4, 3]
    with pytest.raises(ValueError):
        buf.write(16000 * 3600, np.ones(1, np.float32))


def test_mel_filterbank_matches_librosa_htk():
    librosa = pytest.importorskip("librosa")
    ours = mel_filterbank(129, 20, 16000, f_min=50.0).numpy()  # [n_freqs, n_mels]
    ref = librosa.filters.mel(sr=16000, n_fft=256, n_mels=20, fmin=50.0, fmax=8000.0, htk=True, norm=None)  # [n_mels, n_freqs]
    np.testing.assert_allclose(ours, ref.T, atol=1e-5)


def test_mel_features_silence_is_zero_loudness_raises_them_and_frames_are_independent():
    enc = MelEncoder(16000, 16, n_mels=20, sub_frames=4)
    pcm = torch.from_numpy(np.concatenate([np.zeros(3000, np.float32), tone(0.25)]))[None]  # 3 silent + 4 loud frames
    feats = enc.features(pcm)
    assert feats.shape == (1, 7, 80)
    assert feats[0, :3].abs().max() < 1e-6
    assert (feats[0, 3:].amax(-1) > 1.0).all()
    alone = torch.cat([enc.features(pcm[:, i * 1000:(i + 1) * 1000]) for i in range(7)], dim=1)
    torch.testing.assert_close(alone, feats)


def _conditioner():
    cfg = preset("tiny-avatar")
    enc = build_audio_encoder(cfg.audio, cfg.stream.fps)
    return AudioConditioner(cfg.audio, enc, cfg.stream.fps, 4)


def test_windows_of_a_chunk_equal_the_windows_cut_from_the_whole_clip():
    cond = _conditioner()
    rng = np.random.default_rng(0)
    pcm = torch.from_numpy((rng.standard_normal(16000 * 2) * 0.3).astype(np.float32))[None]  # 32 video frames
    whole = cond.windows(pcm, 0, 0, 8)  # latent frames 0..7
    assert whole.shape == (1, 8, cond.window, cond.dim)
    for first in (0, 1, 3, 6):
        f0, end = cond.span(first, 2)
        part = pcm[:, max(f0, 0) * 1000:end * 1000]
        torch.testing.assert_close(cond.windows(part, max(f0, 0), first, 2), whole[:, first:first + 2])
    # latent frame 0 reads frames before the stream: silence; frame f's window ends `lookahead` frames after 4f
    f0, end = cond.span(2, 1)
    assert (f0, end) == (4 * 2 - 4 + 1 - 1, 4 * 2 + 1 + 2)
    assert cond.until_us(2, 1) == end * 1_000_000 // 16


def test_audio_layers_only_in_audio_models_and_audio_is_checked():
    plain = random_transformer(preset("tiny"))
    assert not any("audio" in k for k in plain.state_dict())
    cfg = preset("tiny-avatar")
    model = random_transformer(cfg)
    x = torch.randn(1, 8, 3, 8, 8)
    t = torch.full((1,), 500.0)
    text = torch.randn(1, 4, 64)
    audio = torch.randn(1, 3, cfg.transformer.audio_window, cfg.transformer.audio_dim)
    with pytest.raises(ValueError, match="no audio layers"):
        plain(x, t, text, audio=audio)
    with pytest.raises(ValueError, match="audio must be"):
        model(x, t, text, audio=audio[:, :2])
    with torch.no_grad():
        a, b, none = model(x, t, text, audio=audio), model(x, t, text, audio=audio * 2), model(x, t, text)
    assert (a - b).abs().max() > 1e-3 and (a - none).abs().max() > 1e-3


def test_block_causal_audio_of_a_later_chunk_leaves_earlier_chunks_alone():
    cfg = preset("tiny-avatar")
    model = random_transformer(cfg)
    x, t, text = torch.randn(1, 8, 5, 8, 8), torch.full((1, 5), 500.0), torch.randn(1, 4, 64)
    audio = torch.randn(1, 5, cfg.transformer.audio_window, cfg.transformer.audio_dim)
    changed = audio.clone()
    changed[:, 3:] += 1.0  # the last chunk (frames 3-4 with a 1-frame lead and chunks of 2)
    with torch.no_grad():
        a = model(x, t, text, chunk_frames=2, audio=audio, lead_frames=1)
        b = model(x, t, text, chunk_frames=2, audio=changed, lead_frames=1)
    assert torch.equal(a[:, :, :3], b[:, :, :3])
    assert (a[:, :, 3:] - b[:, :, 3:]).abs().max() > 1e-3


def test_audio_adapter_saves_apart_and_loads_over_a_plain_transformer(tmp_path):
    from models.transformer import CausalWanTransformer

    cfg = preset("tiny-avatar")
    model = random_transformer(cfg)
    plain = CausalWanTransformer(preset("tiny").transformer)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k in plain.state_dict()})
    plain.save_pretrained(tmp_path / "transformer")
    model.save_audio_adapter(tmp_path / "audio_adapter")
    loaded = CausalWanTransformer.from_pretrained(tmp_path / "transformer", audio_adapter=tmp_path / "audio_adapter")
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # a fresh adapter initialised as the identity leaves the base model's output unchanged
    fresh = CausalWanTransformer(cfg.transformer)
    fresh.load_state_dict(plain.state_dict(), strict=False)
    fresh.init_audio_adapter_as_identity()
    x, t, text = torch.randn(1, 8, 2, 8, 8), torch.full((1,), 300.0), torch.randn(1, 4, 64)
    audio = torch.randn(1, 2, cfg.transformer.audio_window, cfg.transformer.audio_dim)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x, t, text, audio=audio), plain(x, t, text))
