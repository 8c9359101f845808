"""Original Wan2.1 release folders, student checkpoints and LoRAs load into CausalWanTransformer and
give the official reference implementation's (`wan22`) forward, fp32, max abs error <= 1e-4."""

import json

import pytest
import torch

from tests.models import wan_reference as W
from models import CausalWanTransformer
from models.wan_weights import WeightsError

pytestmark = pytest.mark.filterwarnings("ignore:CUDA is not available")
TOL = 1e-4


@pytest.fixture(scope="module")
def ref():
    return W.load()


@pytest.fixture(scope="module")
def base(ref, tmp_path_factory):
    """A tiny reference WanModel saved in the original release layout."""
    model = W.tiny_wan_model(ref, seed=0)
    path = tmp_path_factory.mktemp("Wan2.1-T2V-tiny")
    model.save_pretrained(path)
    return model, path


def _inputs(b=2, f=3, h=8, w=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 16, f, h, w, generator=g)
    t = torch.rand(b, f, generator=g) * 1000  # per-frame timesteps: frames at different noise levels
    text = torch.randn(b, 5, 48, generator=g)
    return x, t, text


def _ours(model, x, t, text, text_len=16):
    padded = torch.cat([text, text.new_zeros(text.shape[0], text_len - text.shape[1], text.shape[2])], 1)
    with torch.no_grad():
        return model.eval()(x, t, padded)


def _assert_matches_reference(ours, reference):
    x, t, text = _inputs()
    with torch.no_grad():
        expected = W.reference_forward(reference, x, t, text)
    got = _ours(ours, x, t, text)
    assert got.shape == expected.shape == x.shape
    assert (got - expected).abs().max().item() <= TOL


def test_release_layout_matches_reference(base):
    reference, path = base
    config = json.loads((path / "config.json").read_text())
    assert config["_class_name"] == "WanModel" and "text_dim" not in config and "patch_size" not in config
    ours = CausalWanTransformer.from_pretrained(path)
    assert ours.config.text_dim == 48 and ours.config.patch_size == (1, 2, 2)  # read from the weights
    _assert_matches_reference(ours, reference)


def test_sharded_release_layout(base, tmp_path):
    reference, _ = base
    reference.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "diffusion_pytorch_model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("diffusion_pytorch_model-*.safetensors"))) > 1
    _assert_matches_reference(CausalWanTransformer.from_pretrained(tmp_path), reference)


def test_self_forcing_checkpoint_over_base(ref, base, tmp_path):
    """Self-Forcing saves {generator, generator_ema, critic, ...} with `model.`-prefixed Wan keys."""
    _, path = base
    student, ema = W.tiny_wan_model(ref, seed=1), W.tiny_wan_model(ref, seed=2)
    torch.save({
        "generator": {f"model.{k}": v for k, v in student.state_dict().items()},
        "generator_ema": {f"model.{k}": v for k, v in ema.state_dict().items()},
        "critic": {f"model.{k}": v * 0 for k, v in W.tiny_wan_model(ref, seed=3).state_dict().items()},
        "step": 600,
    }, tmp_path / "self_forcing_dmd.pt")
    _assert_matches_reference(CausalWanTransformer.from_pretrained(path, checkpoint=tmp_path / "self_forcing_dmd.pt"), ema)
    # generator (no EMA) under FSDP wrapper names, in a `model` entry
    torch.save({"model": {f"_fsdp_wrapped_module.model.{k}": v for k, v in student.state_dict().items()}},
               tmp_path / "fsdp.pt")
    _assert_matches_reference(CausalWanTransformer.from_pretrained(path, checkpoint=tmp_path / "fsdp.pt"), student)


def test_diffusers_named_safetensors_checkpoint(ref, base, tmp_path):
    from safetensors.torch import save_file

    _, path = base
    student = W.tiny_wan_model(ref, seed=4)
    ours = CausalWanTransformer.from_pretrained(path, checkpoint=_save_release(student, tmp_path))
    save_file({k: v.contiguous() for k, v in ours.state_dict().items()}, str(tmp_path / "student.safetensors"))
    _assert_matches_reference(CausalWanTransformer.from_pretrained(path, checkpoint=tmp_path / "student.safetensors"), student)


def _save_release(model, folder):
    model.save_pretrained(folder / "release_student")
    return folder / "release_student" / "diffusion_pytorch_model.safetensors"


def _peft_wan(ref, rank, alpha, seed=5):
    """The reference WanModel with a PEFT LoRA on every Linear in its blocks (as LongLive applies it),
    B initialised randomly so the adapter changes the output."""
    peft = pytest.importorskip("peft")
    model = W.tiny_wan_model(ref, seed=0)
    targets = [n for n, m in model.named_modules() if n.startswith("blocks.") and isinstance(m, torch.nn.Linear)]
    lora = peft.get_peft_model(model, peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return peft, lora.eval()


def test_lora_merged_equals_unmerged_peft_forward(ref, base, tmp_path):
    """LongLive-style: `{"generator_lora": get_peft_model_state_dict(...)}`, alpha = rank."""
    _, path = base
    peft, lora = _peft_wan(ref, rank=4, alpha=4)
    torch.save({"generator_lora": peft.get_peft_model_state_dict(lora)}, tmp_path / "lora.pt")
    ours = CausalWanTransformer.from_pretrained(path, lora=[f"{tmp_path / 'lora.pt'}"])
    _assert_matches_reference(ours, lora)
    plain = CausalWanTransformer.from_pretrained(path)
    x, t, text = _inputs()
    assert (_ours(ours, x, t, text) - _ours(plain, x, t, text)).abs().max() > 1e-2  # the adapter matters


def test_lora_alpha_from_adapter_config_and_scale(ref, base, tmp_path):
    """A PEFT `save_pretrained` folder: adapter_model.safetensors + adapter_config.json (alpha 2 * rank)."""
    _, path = base
    _, lora = _peft_wan(ref, rank=4, alpha=8, seed=6)
    lora.save_pretrained(tmp_path / "adapter")
    file = tmp_path / "adapter" / "adapter_model.safetensors"
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["lora_alpha"] == 8
    full = CausalWanTransformer.from_pretrained(path, lora=[str(file)])
    _assert_matches_reference(full, lora)
    half = CausalWanTransformer.from_pretrained(path, lora=[f"{file}:0.5"])
    plain = CausalWanTransformer.from_pretrained(path)
    name = "blocks.0.attn1.to_q.weight"
    w0, w1, wh = (m.state_dict()[name] for m in (plain, full, half))
    assert torch.allclose(wh, w0 + 0.5 * (w1 - w0), atol=1e-6) and not torch.allclose(w1, w0)


# ------------------------------------------------------------------------------ bad inputs
def _one_line_error(path, **kw) -> str:
    with pytest.raises(WeightsError) as info:
        CausalWanTransformer.from_pretrained(path, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_truncated_checkpoint(ref, base, tmp_path):
    _, path = base
    torch.save({"generator": W.tiny_wan_model(ref, seed=1).state_dict()}, tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    assert "cannot read weights" in _one_line_error(path, checkpoint=tmp_path / "cut.pt")
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    assert "cannot read weights" in _one_line_error(path, checkpoint=tmp_path / "cut.safetensors")


def test_checkpoint_for_another_model_size(ref, base, tmp_path):
    _, path = base
    bigger = W.tiny_wan_model(ref, seed=1, dim=128, ffn_dim=256)
    torch.save({"generator_ema": bigger.state_dict()}, tmp_path / "big.pt")
    message = _one_line_error(path, checkpoint=tmp_path / "big.pt")
    assert "wrong shape" in message and "blocks.0" in message


def test_checkpoint_for_another_architecture(ref, base, tmp_path):
    _, path = base
    vae = torch.nn.Sequential(torch.nn.Conv3d(3, 8, 3), torch.nn.Conv3d(8, 16, 1))
    torch.save(vae.state_dict(), tmp_path / "vae.pt")
    message = _one_line_error(path, checkpoint=tmp_path / "vae.pt")
    assert "missing" in message and "unexpected" in message and "another architecture" in message
    deeper = W.tiny_wan_model(ref, seed=1, num_layers=3)
    torch.save(deeper.state_dict(), tmp_path / "deeper.pt")
    assert "unexpected 1" not in (m := _one_line_error(path, checkpoint=tmp_path / "deeper.pt")) and "blocks.2." in m


def test_partial_checkpoint_is_refused(ref, base, tmp_path):
    _, path = base
    state = W.tiny_wan_model(ref, seed=1).state_dict()
    state.pop("head.head.weight")
    torch.save({"generator": state}, tmp_path / "partial.pt")
    assert "missing 1: proj_out.weight" in _one_line_error(path, checkpoint=tmp_path / "partial.pt")


def test_lora_only_file_as_checkpoint_and_bad_lora(ref, base, tmp_path):
    _, path = base
    peft, lora = _peft_wan(ref, rank=2, alpha=2)
    torch.save({"generator_lora": peft.get_peft_model_state_dict(lora)}, tmp_path / "lora.pt")
    assert "--lora" in _one_line_error(path, checkpoint=tmp_path / "lora.pt")
    bad = {"base_model.model.blocks.9.self_attn.q.lora_A.weight": torch.zeros(2, 64),
           "base_model.model.blocks.9.self_attn.q.lora_B.weight": torch.zeros(64, 2)}
    torch.save(bad, tmp_path / "bad_lora.pt")
    assert "blocks.9.attn1.to_q.weight" in _one_line_error(path, lora=[str(tmp_path / "bad_lora.pt")])


def test_release_config_disagreeing_with_weights(base, tmp_path):
    reference, _ = base
    reference.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "ffn_dim": 999}))
    assert "ffn_dim=999" in _one_line_error(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "i2v"}))
    assert "i2v" in _one_line_error(tmp_path)
