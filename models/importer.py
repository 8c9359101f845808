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


def _vae_source(base: Path) -> Path:
    """The base's VAE: diffusers `vae/` or the release's .pth (refused before anything is written)."""
    for source in (base / "vae", base / RELEASE_VAE_NAME):
        if (source / "config.json").is_file() or source.is_file():
            return source
    raise ModelError(f"{base}: no VAE (vae/ or {RELEASE_VAE_NAME})")


def _text_source(base: Path) -> tuple[Path, Path]:
    """(umT5, tokenizer) of the base: diffusers `text_encoder/` + `tokenizer/`, or the release's .pth + tokenizer
    folder (refused before anything is written, so a failed import leaves no half-written output)."""
    for encoder, tokenizer in ((base / "text_encoder", base / "tokenizer"),
                               (base / RELEASE_UMT5_NAME, base / RELEASE_TOKENIZER_DIR)):
        if encoder.exists() and tokenizer.is_dir():
            return encoder, tokenizer
    raise ModelError(f"{base}: no umT5 text encoder (text_encoder/ + tokenizer/, or {RELEASE_UMT5_NAME} + "
                     f"{RELEASE_TOKENIZER_DIR}/)")


def _write_text_encoder(encoder: Path, tokenizer: Path, out: Path, dtype: torch.dtype) -> None:
    """umT5 and its tokenizer into `out`: a diffusers folder copied as it is, a release file converted to `dtype`."""
    if encoder.is_dir():
        shutil.copytree(encoder, out / "text_encoder")
    else:
        umt5_from_release(encoder, dtype).save_pretrained(out / "text_encoder")
    shutil.copytree(tokenizer, out / "tokenizer")


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
    vae_source, (encoder, tokenizer) = _vae_source(base), _text_source(base)
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
        vae = VideoVAE.from_pretrained(vae_source)
        vae.save_pretrained(out / "vae")
        bar.update()
        bar.set_postfix_str(steps[2])
        _write_text_encoder(encoder, tokenizer, out, DTYPES[dtype])
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
