"""Base Wan2.1 folder + student checkpoint (+ LoRAs) -> a framecast model directory.

The base folder is either the original release (`config.json` of a `WanModel`,
`diffusion_pytorch_model*.safetensors`, `Wan2.1_VAE.pth`, `models_t5_umt5-xxl-enc-bf16.pth`,
`google/umt5-xxl/`) or a diffusers Wan2.1 folder (`transformer/`, `vae/`, `text_encoder/`,
`tokenizer/`). The result is a model directory (models/model_dir.py) that `serve`, `generate`,
`bench` and `eval` take with `--model`: the student's transformer (checkpoint loaded and LoRAs
merged) and umT5 stored in `dtype`, the VAE in fp32 (decode quality; it is small), and a
`framecast.json` with the family's streaming settings (models/families.py).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import torch

from models.config import ModelConfig, StreamConfig, TextEncoderConfig
from models.errors import ModelError
from models.families import apply_family
from models.model_dir import CONFIG_FILE
from models.transformer import CausalWanTransformer
from models.vae import RELEASE_VAE_NAME, VideoVAE
from models.wan_t5 import RELEASE_TOKENIZER_DIR, RELEASE_UMT5_NAME, umt5_from_release

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _transformer_folder(base: Path) -> Path:
    if (base / "transformer" / "config.json").is_file():
        return base / "transformer"  # diffusers layout
    if (base / "config.json").is_file():
        return base  # original release layout
    raise ModelError(f"{base}: not a Wan2.1 folder (no config.json, no transformer/config.json)")


def _text_len(folder: Path) -> int:
    """The context length the base model was trained with (WanModel `text_len`; 512 for Wan2.1)."""
    return int(json.loads((folder / "config.json").read_text()).get("text_len", TextEncoderConfig().max_length))


def _write_text_encoder(base: Path, out: Path, dtype: torch.dtype) -> None:
    """umT5 and its tokenizer into `out` (the base has one: `_check_parts`)."""
    if (base / "text_encoder").is_dir() and (base / "tokenizer").is_dir():
        shutil.copytree(base / "text_encoder", out / "text_encoder")
        shutil.copytree(base / "tokenizer", out / "tokenizer")
        return
    umt5_from_release(base / RELEASE_UMT5_NAME, dtype).save_pretrained(out / "text_encoder")
    shutil.copytree(base / RELEASE_TOKENIZER_DIR, out / "tokenizer")


def _check_parts(base: Path) -> None:
    """Refuse a base without a VAE or a text encoder before anything is written (a failed import must not
    leave a half-written output folder that blocks its own retry)."""
    if not ((base / "vae" / "config.json").is_file() or (base / RELEASE_VAE_NAME).is_file()):
        raise ModelError(f"{base}: no VAE (vae/ or {RELEASE_VAE_NAME})")
    diffusers_text = (base / "text_encoder").is_dir() and (base / "tokenizer").is_dir()
    release_text = (base / RELEASE_UMT5_NAME).is_file() and (base / RELEASE_TOKENIZER_DIR).is_dir()
    if not (diffusers_text or release_text):
        raise ModelError(f"{base}: no umT5 text encoder (text_encoder/ + tokenizer/, or {RELEASE_UMT5_NAME} + "
                         f"{RELEASE_TOKENIZER_DIR}/)")


def _load_vae(base: Path) -> VideoVAE:
    if (base / "vae" / "config.json").is_file():
        return VideoVAE.from_pretrained(base / "vae")
    return VideoVAE.from_pretrained(base / RELEASE_VAE_NAME)


def import_model(base: str | Path, out: str | Path, family: str, checkpoint: str | Path | None = None, lora=(),
                 dtype: str = "bf16", stream: dict | None = None, name: str | None = None, progress: bool = True) -> Path:
    """Write the model directory `out` (which must not exist yet, or be empty) and return it.

    stream: StreamConfig overrides (width, height, fps); the family sets chunking and the cache.
    """
    from tqdm import tqdm

    base, out = Path(base), Path(out)
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if out.exists() and any(out.iterdir()):
        raise ModelError(f"{out} exists and is not empty")
    folder = _transformer_folder(base)
    _check_parts(base)
    steps = ["transformer", "vae", "text encoder", CONFIG_FILE]
    with tqdm(total=len(steps), unit="part", desc=f"import {out.name}", disable=not progress) as bar:
        bar.set_postfix_str(steps[0])
        transformer = CausalWanTransformer.from_pretrained(folder, checkpoint=checkpoint, lora=lora)
        out.mkdir(parents=True, exist_ok=True)
        transformer.to(DTYPES[dtype]).save_pretrained(out / "transformer")
        tcfg = transformer.config
        del transformer
        bar.update()
        bar.set_postfix_str(steps[1])
        vae = _load_vae(base)
        vae.save_pretrained(out / "vae")
        bar.update()
        bar.set_postfix_str(steps[2])
        _write_text_encoder(base, out, DTYPES[dtype])
        bar.update()
        bar.set_postfix_str(steps[3])
        cfg = ModelConfig(
            name=name or out.name, transformer=tcfg, vae=vae.cfg,
            stream=dataclasses.replace(StreamConfig(), **(stream or {})),
            text_encoder=TextEncoderConfig(kind="umt5", max_length=_text_len(folder), dim=tcfg.text_dim),
        )
        apply_family(cfg, family).save_json(out / CONFIG_FILE)
        bar.update()
    return out
