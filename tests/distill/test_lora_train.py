"""LoRA fine-tuning in the Self-Forcing stage (distill/lora_train.py): only the adapters train, the
saved adapter is PEFT's format, and it loads and merges through models/lora.py and through PEFT itself.

Measured with the code broken: without freezing the base in `add_lora` the base-weights test fails;
with the alpha / rank factor dropped from models/lora.py (or a wrong `lora_alpha` saved) the merged
output misses the wrapped one by ~1e-1 and the merge test fails.
"""

import copy
import dataclasses
import hashlib
import json

import pytest
import torch

from distill.config import LoraTrainConfig
from distill.lora_train import add_lora, save_lora
from distill.pipeline import Pipeline
from distill.self_forcing import SelfForcingDMD
from distill.trainer import Trainer
from models.generator import StreamingGenerator, load_generator
from models.model_dir import random_transformer, save_model_dir
from models.transformer import CausalWanTransformer
from tests.distill.tiny_recipe import tiny_parts

peft = pytest.importorskip("peft")

LORA = LoraTrainConfig(rank=4, alpha=8.0)  # alpha != rank: the alpha / rank factor (2) matters


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return tiny_parts(tmp_path_factory.mktemp("lora"))


def split(module):
    """(base weights, adapter weights) of a LoRA-injected module, cloned."""
    base, adapters = {}, {}
    for name, param in module.named_parameters():
        (adapters if "lora_" in name else base)[name] = param.detach().clone()
    return base, adapters


def test_a_lora_self_forcing_step_changes_only_adapter_weights(parts, tmp_path):
    recipe, cfg, vae, text = parts
    student = add_lora(random_transformer(cfg, seed=1), LORA)
    teacher = random_transformer(cfg, seed=2).requires_grad_(False)
    critic = add_lora(copy.deepcopy(teacher), LORA)
    sc = dataclasses.replace(recipe.self_forcing, max_steps=1, critic_steps=1, rollout_chunks=2, batch_size=2,
                             lr=1e-2, critic_lr=1e-2, ckpt_every=10_000, lora=LORA)
    gen = StreamingGenerator(cfg, student, vae, text, max_batch=2)
    method = SelfForcingDMD(gen, teacher, critic, ["a red circle", "a blue square"], sc, seed=0)
    before = {"student": split(student), "critic": split(critic)}
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    trainer = Trainer(method, sc, tmp_path, progress=False)
    assert all(len(opt.param_groups[0]["params"]) == len(before[r][1]) for r, opt in trainer.optimizers.items())
    trainer.run()
    for role, module in (("student", student), ("critic", critic)):
        base, adapters = split(module)
        assert all(torch.equal(base[k], before[role][0][k]) for k in base), f"{role}: a base weight moved"
        moved = [k for k in adapters if not torch.equal(adapters[k], before[role][1][k])]
        assert any("lora_B" in k for k in moved), f"{role}: no adapter trained"
    assert all(torch.equal(v, teacher_before[k]) for k, v in teacher.state_dict().items())
    assert set(trainer.ema.names) == set(before["student"][1])  # the EMA keeps the adapters only


def _forward(model, seed=3):
    g = torch.Generator().manual_seed(seed)
    first = next(m for m in model.modules() if isinstance(m, CausalWanTransformer))  # PEFT may wrap it
    x = torch.randn(2, first.config.in_channels, 4, 4, 4, generator=g)  # [B, C, F, h, w]
    t = torch.tensor([700.0, 250.0])
    text = torch.randn(2, 5, first.config.text_dim, generator=g)  # [B, L, text_dim]
    with torch.no_grad():
        return model(x, t, text)


def test_saved_adapter_merges_exactly_through_models_lora_and_loads_in_peft(parts, tmp_path):
    recipe, cfg, vae, text = parts
    base = random_transformer(cfg, seed=5)
    base.save_pretrained(tmp_path / "transformer")
    wrapped = add_lora(copy.deepcopy(base), LORA)
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():  # a trained-looking adapter (B starts at zero, which would hide the scaling)
        for name, param in wrapped.named_parameters():
            if "lora_" in name:
                param.copy_(0.2 * torch.randn(param.shape, generator=g))
    folder = save_lora(wrapped, LORA, tmp_path / "lora")
    assert {p.name for p in folder.iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}

    want = _forward(wrapped.eval())
    plain = _forward(base.eval())
    assert (want - plain).abs().max() > 1e-2  # the adapter changes the output
    merged = CausalWanTransformer.from_pretrained(tmp_path / "transformer", lora=[str(folder)]).eval()
    torch.testing.assert_close(_forward(merged), want, atol=2e-5, rtol=1e-4)
    half = CausalWanTransformer.from_pretrained(tmp_path / "transformer", lora=[f"{folder}:0.5"]).eval()
    assert (_forward(half) - want).abs().max() > 1e-3  # :SCALE is applied

    fresh = CausalWanTransformer.from_pretrained(tmp_path / "transformer")
    loaded = peft.PeftModel.from_pretrained(fresh, str(folder)).eval()
    torch.testing.assert_close(_forward(loaded), want, atol=2e-5, rtol=1e-4)


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_self_forcing_stage_with_lora_writes_an_adapter_beside_an_untouched_model(parts, tmp_path):
    """The fine-tuning command of docs/DISTILL.md: model_dir = out = a framecast model directory."""
    recipe, cfg, vae, _ = parts
    recipe = dataclasses.replace(
        recipe, out=str(tmp_path / "model"), work_dir=str(tmp_path / "work"), model_dir=str(tmp_path / "model"),
        self_forcing=dataclasses.replace(recipe.self_forcing, max_steps=1, critic_steps=1, rollout_chunks=2,
                                         lr=1e-2, lora=LORA))
    save_model_dir(recipe.out, cfg, transformer=random_transformer(cfg, seed=7), vae=vae,
                   teacher=random_transformer(cfg, seed=8))
    before = _digest(tmp_path / "model" / "transformer")
    result = Pipeline(recipe, progress=False).run("self-forcing")
    assert result["lora"] == str(tmp_path / "model" / "lora")
    assert _digest(tmp_path / "model" / "transformer") == before
    plain = load_generator(recipe.out, device="cpu", max_batch=1)
    adapted = load_generator(recipe.out, device="cpu", max_batch=1, lora=[result["lora"]])
    delta = [(a - b).abs().max().item() for a, b in zip(adapted.transformer.parameters(), plain.transformer.parameters())]
    assert max(delta) > 0  # the served model carries the trained adapter
    chunk = next(adapted.stream("a red circle", seed=0))
    assert chunk.frames.shape[1:] == (cfg.stream.height, cfg.stream.width, 3)


def test_a_lora_run_marks_supports_image_only_when_it_trained_from_images(parts, tmp_path):
    """framecast.json after a LoRA self-forcing run (the fine-tuning command: model_dir = out): marked when
    the run had image rollouts, else the base model's value, whichever that is."""
    recipe, cfg, vae, _ = parts
    flags = {}
    for base_flag, share in ((False, 0.0), (False, 1.0), (True, 0.0)):
        root = tmp_path / f"{base_flag}-{share}"
        save_model_dir(root / "model", dataclasses.replace(cfg, supports_image=base_flag), vae=vae,
                       transformer=random_transformer(cfg, seed=7), teacher=random_transformer(cfg, seed=8))
        run = dataclasses.replace(
            recipe, out=str(root / "model"), work_dir=str(root / "work"), model_dir=str(root / "model"),
            self_forcing=dataclasses.replace(recipe.self_forcing, max_steps=1, critic_steps=1, rollout_chunks=2,
                                             score_frames=4, image_share=share, shapes_prompts=16, lora=LORA))
        Pipeline(run, progress=False).run("self-forcing")
        assert (root / "model" / "lora" / "adapter_model.safetensors").exists()
        flags[base_flag, share] = json.loads((root / "model" / "framecast.json").read_text())["supports_image"]
    assert flags == {(False, 0.0): False, (False, 1.0): True, (True, 0.0): True}
