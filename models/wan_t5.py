"""Wan2.1's released umT5-XXL encoder file (`models_t5_umt5-xxl-enc-bf16.pth`) as a transformers
`UMT5EncoderModel`.

The file is the state dict of the reference `T5Encoder` (wan/modules/t5.py): per block a
pre-norm self-attention without scaling, a relative position bias of its own (umT5), and a
gated-GELU (tanh) feed-forward `fc2(fc1(x) * gelu(gate(x)))`. That is exactly transformers'
UMT5 encoder, so only names change. diffusers ships no converter for this file, hence the
pattern table below (one line per parameter kind); the sizes are read from the weights.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from models.wan_weights import WeightsError, _first, check_state, read_weights_file

RELEASE_UMT5_NAME = "models_t5_umt5-xxl-enc-bf16.pth"
RELEASE_TOKENIZER_DIR = Path("google") / "umt5-xxl"  # the tokenizer folder inside a Wan2.1 release

# reference name pattern -> transformers UMT5EncoderModel name ({i}: block index)
_RENAMES = [
    (r"token_embedding\.weight", "shared.weight"),
    (r"norm\.weight", "encoder.final_layer_norm.weight"),
    (r"blocks\.(\d+)\.norm1\.weight", r"encoder.block.\1.layer.0.layer_norm.weight"),
    (r"blocks\.(\d+)\.attn\.([qkvo])\.weight", r"encoder.block.\1.layer.0.SelfAttention.\2.weight"),
    (r"blocks\.(\d+)\.pos_embedding\.embedding\.weight", r"encoder.block.\1.layer.0.SelfAttention.relative_attention_bias.weight"),
    (r"blocks\.(\d+)\.norm2\.weight", r"encoder.block.\1.layer.1.layer_norm.weight"),
    (r"blocks\.(\d+)\.ffn\.gate\.0\.weight", r"encoder.block.\1.layer.1.DenseReluDense.wi_0.weight"),
    (r"blocks\.(\d+)\.ffn\.fc1\.weight", r"encoder.block.\1.layer.1.DenseReluDense.wi_1.weight"),
    (r"blocks\.(\d+)\.ffn\.fc2\.weight", r"encoder.block.\1.layer.1.DenseReluDense.wo.weight"),
]


def _rename(key: str) -> str | None:
    for pattern, target in _RENAMES:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, target, key)
    return None


def umt5_from_release(file: str | Path, dtype: torch.dtype | None = None):
    """A transformers `UMT5EncoderModel` holding the weights of Wan's released umT5 encoder file."""
    from transformers import UMT5Config, UMT5EncoderModel

    file = Path(file)
    state = read_weights_file(file)
    if not isinstance(state, dict) or "token_embedding.weight" not in state:
        raise WeightsError(f"{file}: not a Wan umT5 encoder state dict (no token_embedding.weight)")
    renamed = {_rename(k): v for k, v in state.items()}
    unknown = [k for k, new in zip(state, renamed) if new is None]
    if unknown:
        raise WeightsError(f"{file}: unexpected keys for a Wan umT5 encoder: {_first(unknown)}")
    vocab, dim = state["token_embedding.weight"].shape
    buckets, heads = state["blocks.0.pos_embedding.embedding.weight"].shape  # [num_buckets, heads]
    config = UMT5Config(
        vocab_size=vocab, d_model=dim, d_kv=state["blocks.0.attn.q.weight"].shape[0] // heads,
        d_ff=state["blocks.0.ffn.fc1.weight"].shape[0], num_heads=heads,
        num_layers=1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks.")),
        relative_attention_num_buckets=buckets, relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
    )
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    renamed["encoder.embed_tokens.weight"] = renamed["shared.weight"]  # tied, as transformers keeps them
    check_state({k: v.shape for k, v in model.state_dict().items()}, renamed, str(file))
    model.load_state_dict(renamed, assign=True)
    model.tie_weights()
    return model.to(dtype=dtype) if dtype is not None else model
