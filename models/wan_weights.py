"""Wan transformer weights as people have them on disk, turned into framecast's state dict.

framecast's module names are diffusers' `WanTransformer3DModel` names. This file accepts:

- a diffusers folder (`config.json` with diffusers keys + `diffusion_pytorch_model*.safetensors`);
- an original Wan2.1 release folder (`config.json` with `WanModel` keys: dim, ffn_dim, freq_dim,
  num_heads, num_layers, in_dim, out_dim, text_len, model_type, eps; the same safetensors names,
  sharded or not, with Wan key names). Values the config omits (text_dim, patch_size, ...) are
  read from the weight shapes;
- a student's training checkpoint loaded over either (`checkpoint=`): `.pt`/`.pth`/`.safetensors`,
  the generator picked as `generator_ema` > `generator` > `model` > a bare state dict, keys with
  or without a `model.` prefix and FSDP/compile wrapper names, in Wan or diffusers naming.

Wan names are translated by diffusers' own converter (`convert_wan_transformer_to_diffusers`),
not by a table kept here. Every mismatch (missing or unexpected keys, wrong shapes, unreadable
files) is one `WeightsError` naming the first few offenders: nothing is ever loaded partially.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch

from models.config import TransformerConfig
from models.errors import ModelError

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
# a training checkpoint's generator, in order of preference (Self-Forcing / CausVid / LongLive / ...)
GENERATOR_KEYS = ("generator_ema", "generator", "model", "state_dict")
# FSDP / activation-checkpointing / torch.compile / DDP wrappers that add a path segment to names
_WRAPPER_SEGMENT = re.compile(r"(^|\.)(_fsdp_wrapped_module|_checkpoint_wrapped_module|_orig_mod|module)\.")
_SHOW = 5  # offending names quoted in an error


class WeightsError(ModelError, ValueError):
    """A weights file or folder that cannot be used as asked (one line, names the first offenders)."""


def _first(names, n: int = _SHOW) -> str:
    names = sorted(names)
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


# ----------------------------------------------------------------------------- reading files
def read_weights_file(path: str | Path) -> Any:
    """The object stored in a `.safetensors` / `.pt` / `.pth` / `.bin` / `.ckpt` file (tensors on CPU).

    `.pt`-style files are read with `weights_only=True` (no code runs) and memory-mapped when they
    are in torch's zip format, so a 10 GB checkpoint costs no copy until its tensors are used.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:  # legacy (non-zip) format cannot be memory-mapped
                if "mmap" not in str(exc):
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except Exception as exc:  # truncated, corrupt, pickled objects: one line either way
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path}: cannot read weights (truncated or not a checkpoint?): {first}") from None
    raise WeightsError(f"{path}: unknown weights format {path.suffix!r} (expected .safetensors, .pt, .pth, .bin)")


def read_folder_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of `diffusion_pytorch_model*.safetensors` in a folder (sharded via the index, or one file)."""
    index = folder / INDEX_NAME
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / WEIGHTS_NAME).exists():
        files = [WEIGHTS_NAME]
    else:
        raise WeightsError(f"{folder}: no {WEIGHTS_NAME} (or {INDEX_NAME}) in the folder")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(read_weights_file(folder / name))
    return state


# ----------------------------------------------------------------------------- names
def strip_wrappers(key: str) -> str:
    """`_fsdp_wrapped_module.model.blocks.0...` -> `blocks.0...`: wrapper segments and a leading `model.`."""
    key = _WRAPPER_SEGMENT.sub(r"\1", key)
    while key.startswith("model.") and not key.startswith("model.diffusion_model."):
        key = key[len("model."):]
    return key.removeprefix("model.diffusion_model.").removeprefix("diffusion_model.")


def is_wan_naming(keys) -> bool:
    """True for original Wan names (`blocks.N.self_attn.q`, `head.head`, `text_embedding.0`, ...)."""
    return any(".self_attn." in k or ".cross_attn." in k or ".modulation" in k or re.search(r"\.ffn\.[02]\.", k)
               or k.startswith(("head.", "text_embedding.", "time_embedding.")) for k in keys)


def to_diffusers_names(state: dict[str, Any]) -> dict[str, Any]:
    """A state dict (or any dict keyed by parameter names) in diffusers names; Wan names go through
    diffusers' converter, diffusers names are returned as they are."""
    state = {strip_wrappers(k): v for k, v in state.items()}
    if not is_wan_naming(state):
        return state
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    return convert_wan_transformer_to_diffusers(dict(state))


# ----------------------------------------------------------------------------- configs
def is_release_config(config: dict[str, Any]) -> bool:
    """A `WanModel` config.json (original release) rather than a diffusers one."""
    return config.get("_class_name") == "WanModel" or ("dim" in config and "num_heads" in config)


def config_from_release(config: dict[str, Any], state: dict[str, torch.Tensor]) -> TransformerConfig:
    """TransformerConfig from a `WanModel` config.json plus the (diffusers-named) weights it ships with.

    Heads, eps and model_type come from the config; every size the weights determine is read from
    their shapes, and a config value that disagrees with them is an error.
    """
    if config.get("model_type", "t2v") != "t2v":
        raise WeightsError(f"Wan model_type {config['model_type']!r} is not supported (only text-to-video 't2v')")
    if "num_heads" not in config:
        raise WeightsError("a WanModel config.json needs num_heads (it cannot be read from the weights)")
    need = ["patch_embedding.weight", "condition_embedder.text_embedder.linear_1.weight",
            "condition_embedder.time_embedder.linear_1.weight", "blocks.0.ffn.net.0.proj.weight", "proj_out.weight"]
    missing = [k for k in need if k not in state]
    if missing:
        raise WeightsError(f"not Wan transformer weights: missing {_first(missing)}")
    if any(k.startswith("condition_embedder.image_embedder.") for k in state):
        raise WeightsError("image-to-video Wan weights (image embedder) are not supported")
    dim, in_channels, *patch = state["patch_embedding.weight"].shape  # [E, C, pt, ph, pw]
    layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    heads = int(config["num_heads"])
    inferred = {
        "dim": dim,
        "in_dim": in_channels,
        "out_dim": state["proj_out.weight"].shape[0] // math.prod(patch),
        "text_dim": state["condition_embedder.text_embedder.linear_1.weight"].shape[1],
        "freq_dim": state["condition_embedder.time_embedder.linear_1.weight"].shape[1],
        "ffn_dim": state["blocks.0.ffn.net.0.proj.weight"].shape[0],
        "num_layers": layers,
    }
    wrong = [f"{k}={config[k]} (weights: {v})" for k, v in inferred.items() if k in config and int(config[k]) != v]
    if wrong:
        raise WeightsError(f"config.json disagrees with the weights: {', '.join(wrong)}")
    if dim % heads:
        raise WeightsError(f"num_heads {heads} does not divide dim {dim}")
    if "blocks.0.attn1.norm_q.weight" not in state:
        raise WeightsError("Wan weights without qk-norm are not supported")
    return TransformerConfig(
        patch_size=tuple(int(p) for p in patch), num_attention_heads=heads, attention_head_dim=dim // heads,
        in_channels=in_channels, out_channels=inferred["out_dim"], text_dim=inferred["text_dim"],
        freq_dim=inferred["freq_dim"], ffn_dim=inferred["ffn_dim"], num_layers=layers,
        cross_attn_norm="blocks.0.norm2.weight" in state, eps=float(config.get("eps", 1e-6)),
    )


def read_transformer_folder(folder: str | Path) -> tuple[TransformerConfig, dict[str, torch.Tensor]]:
    """(config, diffusers-named state dict) of a diffusers or original-release transformer folder."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise WeightsError(f"{folder}: no config.json (expected a diffusers or Wan release transformer folder)")
    config = json.loads((folder / "config.json").read_text())
    state = read_folder_weights(folder)
    if is_release_config(config):
        state = to_diffusers_names(state)
        cfg = config_from_release(config, state)
    else:
        cfg = TransformerConfig.from_dict(config)
        state = {k: v for k, v in state.items() if not k.startswith("rope.")}
    return cfg, state


# ----------------------------------------------------------------------------- checkpoints
def generator_state(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The generator weights inside a loaded training checkpoint (see GENERATOR_KEYS)."""
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"{path}: not a state dict or training checkpoint (found {type(obj).__name__})")
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    for key in GENERATOR_KEYS:
        if isinstance(obj.get(key), dict) and obj[key]:
            return generator_state(obj[key], path)
    if "generator_lora" in obj:
        raise WeightsError(f"{path}: holds only LoRA weights (generator_lora); pass it with --lora instead")
    raise WeightsError(f"{path}: no generator weights (looked for {', '.join(GENERATOR_KEYS)}; "
                       f"top-level keys: {_first(map(str, obj))})")


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A student checkpoint's generator weights, diffusers-named, non-tensor entries dropped."""
    path = Path(path)
    state = generator_state(read_weights_file(path), path)
    return to_diffusers_names({k: v for k, v in state.items() if isinstance(v, torch.Tensor)})


def check_state(expected: dict[str, torch.Size], state: dict[str, torch.Tensor], source: str) -> None:
    """Raise one WeightsError unless `state` has exactly the expected names and shapes."""
    missing = expected.keys() - state.keys()
    unexpected = state.keys() - expected.keys()
    if missing or unexpected:
        parts = [f"missing {len(missing)}: {_first(missing)}" if missing else "",
                 f"unexpected {len(unexpected)}: {_first(unexpected)}" if unexpected else ""]
        hint = " — a checkpoint for another architecture?" if len(missing) + len(unexpected) > 2 else ""
        raise WeightsError(f"{source}: keys do not match the model ({'; '.join(p for p in parts if p)}){hint}")
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k])}" for k in sorted(expected)
             if tuple(state[k].shape) != tuple(expected[k])]
    if wrong:
        raise WeightsError(f"{source}: {len(wrong)} tensor(s) have the wrong shape for this model "
                           f"(a checkpoint for another model size?): {', '.join(wrong[:3])}")
