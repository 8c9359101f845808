"""VideoVAE: streaming decode equals diffusers' full decode; encode, persistence, normalisation."""

import dataclasses

import numpy as np
import pytest
import torch

from models.config import preset
from models.vae import VideoVAE, frames_to_uint8, uint8_to_video


@pytest.fixture(scope="module")
def vae() -> VideoVAE:
    torch.manual_seed(0)
    cfg = dataclasses.replace(
        preset("tiny").vae,
        latents_mean=tuple(0.1 * i for i in range(8)),
        latents_std=tuple(0.5 + 0.25 * i for i in range(8)),
    )
    return VideoVAE.from_config(cfg).eval()


def _diffusers_decode(vae: VideoVAE, latents: torch.Tensor) -> torch.Tensor:
    """The oracle: diffusers' own frame-by-frame decode of the raw latents."""
    with torch.no_grad():
        return vae.model.decode(vae.denormalize(latents)).sample


def test_streaming_chunks_equal_full_decode(vae):
    latents = torch.randn(1, 8, 6, 2, 2, generator=torch.Generator().manual_seed(1))  # [B, z, F, h, w]
    expected = _diffusers_decode(vae, latents)  # [1, 3, 21, 16, 16]
    decoder = vae.streaming_decoder(batch_size=1)
    chunks = [decoder.decode_chunk(latents[:, :, a:b]) for a, b in ((0, 2), (2, 3), (3, 6))]
    assert [c.shape[2] for c in chunks] == [1 + 4, 4, 12]
    streamed = torch.cat(chunks, dim=2)
    assert streamed.shape == expected.shape == (1, 3, 21, 16, 16)
    assert (streamed - expected).abs().max().item() <= 1e-5
    with torch.no_grad():
        assert (vae.decode(latents) - expected).abs().max().item() <= 1e-5


def test_interleaved_decoders_keep_separate_caches(vae):
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(2, 1, 8, 4, 2, 2, generator=g)
    dec_a, dec_b = vae.streaming_decoder(1), vae.streaming_decoder(1)
    out_a, out_b = [], []
    for i in range(0, 4, 2):
        out_a.append(dec_a.decode_chunk(a[:, :, i:i + 2]))
        out_b.append(dec_b.decode_chunk(b[:, :, i:i + 2]))
    assert (torch.cat(out_a, 2) - _diffusers_decode(vae, a)).abs().max().item() <= 1e-5
    assert (torch.cat(out_b, 2) - _diffusers_decode(vae, b)).abs().max().item() <= 1e-5
    dec_a.reset()  # a reset decoder starts a new video
    again = dec_a.decode_chunk(a[:, :, :2])
    torch.testing.assert_close(again, out_a[0], atol=1e-6, rtol=0)


def test_decode_together_batches_steady_streams_and_equals_one_by_one(vae):
    from models.vae import StreamingDecoder

    g = torch.Generator().manual_seed(5)
    videos = torch.randn(3, 1, 8, 7, 2, 2, generator=g)  # three streams' latents [1, z, F, h, w]
    decoders = [vae.streaming_decoder(1) for _ in range(3)]
    calls = []
    original = vae._decode_frames
    vae._decode_frames = lambda z, cache, first: calls.append(z.shape[0]) or original(z, cache, first)
    try:
        # stream 2 joins one chunk late: chunk 1 batches streams 0 and 1, stream 2 decodes its first chunk alone
        schedule = [(0, [(0, 3), (1, 3)]), (1, [(0, 2), (1, 2), (2, 3)]), (2, [(0, 2), (1, 2), (2, 2)])]
        outputs = {i: [] for i in range(3)}
        starts = [0, 0, 0]
        for _, work in schedule:
            ids = [i for i, _ in work]
            chunks = [videos[i][:, :, starts[i]:starts[i] + n] for i, n in work]
            for (i, n), out in zip(work, StreamingDecoder.decode_together([decoders[i] for i in ids], chunks)):
                outputs[i].append(out)
                starts[i] += n
    finally:
        vae._decode_frames = original
    assert calls == [1, 1, 1, 2, 3]  # first chunks alone (the newcomer before the batch), then one batch of all
    for i in range(3):
        expected = _diffusers_decode(vae, videos[i][:, :, :starts[i]])
        assert (torch.cat(outputs[i], 2) - expected).abs().max().item() <= 1e-5


def test_encode_decode_shapes_and_diffusers_parity(vae):
    video = torch.rand(2, 3, 9, 16, 24, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(video)
        assert latents.shape == (2, 8, 3, 2, 3)
        expected = vae.normalize(vae.model.encode(video).latent_dist.mode())
        assert (latents - expected).abs().max().item() <= 1e-5
        sampled = vae.encode(video, generator=torch.Generator().manual_seed(0))
        assert sampled.shape == latents.shape and not torch.equal(sampled, latents)
        assert vae.decode(latents).shape == (2, 3, 9, 16, 24)
        assert vae.encode_image(video[:, :, 0]).shape == (2, 8, 1, 2, 3)
    with pytest.raises(ValueError, match="1 \\+ a multiple of 4"):
        vae.encode(video[:, :, :8])
    with pytest.raises(ValueError, match="latents"):
        vae.streaming_decoder(2).decode_chunk(latents[:1])


def test_save_load_round_trip(vae, tmp_path):
    vae.save_pretrained(tmp_path / "vae")
    loaded = VideoVAE.from_pretrained(tmp_path / "vae").eval()
    assert loaded.cfg == vae.cfg
    latents = torch.randn(1, 8, 2, 2, 2, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(latents), vae.decode(latents), atol=0, rtol=0)
    with pytest.raises(FileNotFoundError):
        VideoVAE.from_pretrained(tmp_path / "missing")


def test_normalisation_round_trip(vae):
    z = torch.randn(2, 8, 3, 2, 2)
    latents = vae.normalize(z)
    torch.testing.assert_close(latents[:, 3], (z[:, 3] - 0.3) / 1.25)
    torch.testing.assert_close(vae.denormalize(latents), z, atol=1e-6, rtol=0)


def test_uint8_conversion_round_trip():
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 3, 4, 5, 3), dtype=np.uint8)
    video = uint8_to_video(frames)
    assert video.shape == (2, 3, 3, 4, 5) and video.min() >= -1 and video.max() <= 1
    np.testing.assert_array_equal(frames_to_uint8(video), frames)
    with pytest.raises(ValueError):
        uint8_to_video(frames.astype(np.float32))


def test_onednn_convs_match_torch_conv_with_gradients():
    from models.vae import use_onednn_convs

    torch.manual_seed(5)
    conv = torch.nn.Conv3d(4, 3, 3, padding=(0, 1, 1))
    fast = torch.nn.Conv3d(4, 3, 3, padding=(0, 1, 1))
    fast.load_state_dict(conv.state_dict())
    use_onednn_convs(fast)
    x = torch.randn(1, 4, 5, 6, 6, requires_grad=True)  # batch 1, tiny: PyTorch's slow path
    y_ref, y = conv(x), fast(x)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    g_ref = torch.autograd.grad(y_ref.square().sum(), (x, conv.weight))
    g = torch.autograd.grad(y.square().sum(), (x, fast.weight))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-4)


def test_narrow_decoder_round_trips(tmp_path):
    cfg = dataclasses.replace(preset("tiny").vae, base_dim=12, decoder_base_dim=8)
    vae = VideoVAE.from_config(cfg)
    vae.save_pretrained(tmp_path)
    loaded = VideoVAE.from_pretrained(tmp_path)
    assert loaded.cfg.decoder_base_dim == 8 and loaded.cfg.base_dim == 12
    assert loaded.model.decoder.conv_out.in_channels == 8 < loaded.model.encoder.conv_in.out_channels
