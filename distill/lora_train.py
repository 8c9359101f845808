"""LoRA adapters for the Self-Forcing stage: injected with PEFT, trained alone, saved PEFT-style.

A LoRA linear computes `h = W0 x + (alpha / r) B A x` (Hu et al. 2021, eq. 3) with `W0` frozen and
only `A [r, in]`, `B [out, r]` trained (`B` starts at zero, so the adapted model starts as the base).
`add_lora` injects adapters into a transformer in place (PEFT's `inject_adapter_in_model`, no
wrapper class, so the streaming generator, the trainer and its EMA keep using the module as is);
`save_lora` writes what PEFT's `PeftModel.save_pretrained` writes:

    DIR/adapter_config.json        PEFT's LoraConfig (r, lora_alpha, target_modules, ...)
    DIR/adapter_model.safetensors  base_model.model.<module>.lora_A.weight / .lora_B.weight

which `PeftModel.from_pretrained(transformer, DIR)` loads, and which `models/lora.py` merges at
load time (`framecast serve --lora DIR[:SCALE]`), so serving costs nothing extra.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from distill.config import LoraTrainConfig

from models.lora import PEFT_ADAPTER_FILE as ADAPTER_FILE
PEFT_PREFIX = "base_model.model."  # PeftModel's key prefix in saved adapters


def peft_config(cfg: LoraTrainConfig):
    """PEFT's LoraConfig for `cfg` (alpha 0 means alpha = rank)."""
    import peft

    if cfg.rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {cfg.rank}")
    return peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha or cfg.rank, target_modules=list(cfg.targets),
                           lora_dropout=0.0, bias="none")


def add_lora(module: nn.Module, cfg: LoraTrainConfig) -> nn.Module:
    """Inject rank-`cfg.rank` adapters into `module`'s target linears, in place; afterwards only the
    adapters require gradients. Returns `module`."""
    import peft

    module.requires_grad_(False)
    peft.inject_adapter_in_model(peft_config(cfg), module)
    trainable = [n for n, p in module.named_parameters() if "lora_" in n]
    if not trainable:
        raise ValueError(f"no linear of the model matches LoRA targets {list(cfg.targets)}")
    for name, param in module.named_parameters():
        param.requires_grad_("lora_" in name)
    return module


def adapter_state(module: nn.Module, weights: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The adapter tensors of a LoRA-injected `module` in PEFT's saved form (`base_model.model.<module>.lora_A.weight`,
    CPU, contiguous). `weights`: parameter values to use instead of the module's (e.g. the EMA's), keyed like
    `named_parameters`."""
    from peft import get_peft_model_state_dict

    state = {k: v.detach() for k, v in module.state_dict().items()}
    state.update(weights or {})
    adapters = get_peft_model_state_dict(module, state_dict=state)  # adapter name dropped, as PEFT saves
    return {PEFT_PREFIX + k: v.detach().float().cpu().contiguous() for k, v in adapters.items()}


def save_lora(module: nn.Module, cfg: LoraTrainConfig, out_dir: str | Path,
              weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Write `out_dir/adapter_config.json` + `out_dir/adapter_model.safetensors`; returns `out_dir`."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_config(cfg).save_pretrained(str(out_dir))
    save_file(adapter_state(module, weights), str(out_dir / ADAPTER_FILE), metadata={"format": "pt"})
    return out_dir
