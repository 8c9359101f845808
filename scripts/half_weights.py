"""Store a model directory's transformer weights in float16, halving its size on disk.

    python scripts/half_weights.py checkpoints/shapes [--parts transformer teacher]

The shipped `shapes` directory keeps its student and teacher this way (docs/DISTILL.md) to stay
under 30 MB. Loading casts back: `load_generator` and the teacher sampler load in the compute
dtype (fp32 on a CPU), the distill pipeline calls `.float()`; fp16 -> fp32 is exact, so only the
one rounding of each weight to fp16 (11-bit mantissa) differs from the trained fp32 weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "diffusion_pytorch_model.safetensors"


def half_weights(folder: Path) -> None:
    path = folder / WEIGHTS
    state = load_file(path)
    save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in state.items()}, path,
              metadata={"format": "pt"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--parts", nargs="+", default=["transformer", "teacher"])
    args = parser.parse_args()
    for part in args.parts:
        half_weights(args.model_dir / part)
        print(f"{args.model_dir / part / WEIGHTS}: {(args.model_dir / part / WEIGHTS).stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
