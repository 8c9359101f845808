"""LoRA adapters merged into the transformer's weights at load time.

A LoRA adds `scale * (alpha / rank) * B @ A` to a linear weight `W [out, in]` (A `[rank, in]`,
B `[out, rank]`; Hu et al. 2021, eq. 3: h = W0 x + (alpha / r) * B A x). After merging, the model
runs at exactly the base model's cost.

Accepted files (`.safetensors` / `.pt`), or a PEFT adapter folder (its `adapter_model.safetensors`,
as `PeftModel.save_pretrained` and `framecast distill self-forcing` with `lora.rank > 0` write it),
keyed per adapted module:
- PEFT: `<module>.lora_A.weight` / `<module>.lora_B.weight` (as `get_peft_model_state_dict` saves,
  e.g. LongLive's rank-256 adapter, possibly under `generator_lora`), or with the adapter name
  (`lora_A.default.weight`); a `base_model.model.` prefix is removed;
- kohya style: `<module>.lora_down.weight` / `<module>.lora_up.weight` (+ `<module>.alpha`).
Module names may be Wan's or diffusers'. alpha comes from `<module>.alpha` tensors, else from an
`adapter_config.json` beside the file (PEFT's `lora_alpha`, `r`, `use_rslora`), else alpha = rank
(LongLive's published setting, rank 256 / alpha 256).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from models.wan_weights import WeightsError, _first, read_weights_file, to_diffusers_names

PEFT_ADAPTER_FILE = "adapter_model.safetensors"  # the weights file of a PEFT adapter folder
_PAIR = re.compile(r"^(?P<module>.+?)\.(?P<kind>lora_A|lora_B|lora_down|lora_up)(\.[^.]+)?\.weight$")


@dataclass(frozen=True)
class LoraSpec:
    """One `--lora FILE[:SCALE]` argument."""

    path: Path
    scale: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "LoraSpec":
        """`adapter.pt` or `adapter.pt:0.8` (a trailing `:number` is the scale; other colons are path)."""
        path, sep, tail = text.rpartition(":")
        if sep:
            try:
                return cls(Path(path), float(tail))
            except ValueError:
                pass
        return cls(Path(text), 1.0)

    def __str__(self) -> str:
        return f"{self.path}:{self.scale:g}"


@dataclass
class LoraWeights:
    """Per adapted module (diffusers name of its weight): (A [r, in], B [out, r], alpha / r factor)."""

    factors: dict[str, tuple[torch.Tensor, torch.Tensor, float]]


def _adapter_config(path: Path) -> dict:
    config = path.parent / "adapter_config.json"
    return json.loads(config.read_text()) if config.is_file() else {}


def read_lora(path: str | Path) -> LoraWeights:
    """Parse a LoRA file (or PEFT adapter folder) into merge factors keyed by the diffusers weight name they modify."""
    path = Path(path)
    if path.is_dir():
        path = path / PEFT_ADAPTER_FILE
    obj = read_weights_file(path)
    if isinstance(obj, dict) and isinstance(obj.get("generator_lora"), dict):
        obj = obj["generator_lora"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a LoRA state dict")
    config = _adapter_config(path)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    alphas: dict[str, float] = {}
    for key, value in obj.items():
        key = key.removeprefix("base_model.model.").removeprefix("transformer.")
        if key.endswith(".alpha"):
            alphas[key[: -len(".alpha")]] = float(value)
            continue
        match = _PAIR.match(key)
        if not match:
            raise WeightsError(f"{path}: not a LoRA file (unexpected key {key!r})")
        kind = {"lora_down": "A", "lora_up": "B", "lora_A": "A", "lora_B": "B"}[match["kind"]]
        pairs.setdefault(match["module"], {})[kind] = value
    if not pairs:
        raise WeightsError(f"{path}: no lora_A/lora_B weights")
    incomplete = [m for m, ab in pairs.items() if len(ab) != 2]
    if incomplete:
        raise WeightsError(f"{path}: LoRA modules without both A and B: {_first(incomplete)}")
    factors = {}
    for module, ab in pairs.items():
        a, b = ab["A"], ab["B"]
        rank = a.shape[0]
        if a.ndim != 2 or b.ndim != 2 or b.shape[1] != rank:
            raise WeightsError(f"{path}: {module}: A {tuple(a.shape)} and B {tuple(b.shape)} are not a rank-r pair")
        alpha = alphas.get(module, float(config.get("lora_alpha", rank)))
        factor = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
        factors[module + ".weight"] = (a, b, factor)
    renamed = to_diffusers_names({name: name for name in factors})  # diffusers name -> original name
    return LoraWeights({new: factors[old] for new, old in renamed.items()})


def merge_lora(state: dict[str, torch.Tensor], lora: LoraWeights, scale: float = 1.0, source: str = "LoRA") -> None:
    """W += scale * (alpha / r) * B @ A for every adapted weight of `state`, in place (fp32 math)."""
    unknown = [k for k in lora.factors if k not in state]
    if unknown:
        raise WeightsError(f"{source}: adapts modules this model does not have: {_first(unknown)}")
    for name, (a, b, factor) in lora.factors.items():
        w = state[name]
        if (b.shape[0], a.shape[1]) != tuple(w.shape):
            raise WeightsError(f"{source}: {name} is {tuple(w.shape)} but the LoRA makes {(b.shape[0], a.shape[1])}")
        delta = (b.to(w.device, torch.float32) @ a.to(w.device, torch.float32)) * (factor * scale)
        state[name] = (w.float() + delta).to(w.dtype)
