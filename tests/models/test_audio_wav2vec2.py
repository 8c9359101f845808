"""The Wan-scale avatar path on a tiny config: a model directory holding a plain Wan transformer, a
separate audio adapter (`audio_adapter/`) and a wav2vec2 audio encoder folder (`audio_encoder/`,
transformers' Wav2Vec2Model, random tiny weights) loads and streams with audio."""

import dataclasses

import numpy as np
import pytest
import torch

from models import load_generator
from models.audio import Wav2Vec2Encoder, float_to_pcm_s16le
from models.config import AudioConfig, preset
from models.model_dir import random_transformer, random_vae, save_model_dir
from models.stream_api import ChunkInput, Conditioning


def tiny_wav2vec2(folder):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16,
                         num_conv_pos_embedding_groups=2, do_stable_layer_norm=True, feat_extract_norm="layer")
    Wav2Vec2Model(cfg).save_pretrained(folder)
    return cfg


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan-avatar")
    tiny_wav2vec2(root / "audio_encoder")
    base = preset("tiny")
    audio = AudioConfig(encoder="wav2vec2", path="audio_encoder", encoder_context_frames=4)
    tcfg = dataclasses.replace(base.transformer, audio_dim=32, audio_window=audio.window(4), audio_tokens=2)
    full = random_transformer(dataclasses.replace(base, transformer=tcfg, audio=audio), seed=3)
    plain = random_transformer(base, seed=3)
    plain.load_state_dict({k: v for k, v in full.state_dict().items() if k in plain.state_dict()})
    save_model_dir(root, dataclasses.replace(base, name="tiny-wan-avatar", audio=audio), transformer=plain,
                   vae=random_vae(base))
    full.save_audio_adapter(root / "audio_adapter")
    return root, full


def test_wav2vec2_features_are_one_per_video_frame(tmp_path):
    tiny_wav2vec2(tmp_path)
    enc = Wav2Vec2Encoder(tmp_path, fps=16)
    feats = enc.features(torch.randn(2, 16000))
    assert feats.shape == (2, 16, 32) and torch.isfinite(feats).all()


def test_wan_folder_plus_adapter_plus_wav2vec2_streams_with_audio(model_dir):
    root, full = model_dir
    gen = load_generator(str(root), device="cpu", max_batch=1)
    assert gen.info.inputs == ("audio",) and gen.cfg.transformer.audio_dim == 32
    for k, v in full.audio_state_dict().items():  # the adapter came from audio_adapter/, the rest from transformer/
        assert torch.equal(gen.transformer.state_dict()[k], v), k
    face = np.full((64, 64, 3), 90, np.uint8)
    t = np.arange(32000) / 16000
    voice = (0.5 * np.sin(2 * np.pi * 200 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)

    def run(audio):
        s = gen.open(Conditioning("a face", seed=4, image=face, inputs=("audio",)))
        try:
            feed = [ChunkInput("audio", 0, float_to_pcm_s16le(audio))] if audio is not None else []
            return np.concatenate([gen.step([s], [feed if k == 0 else []])[0].frames for k in range(2)]).astype(int)
        finally:
            gen.close_stream(s)

    assert np.abs(run(voice) - run(None)).max() > 0
