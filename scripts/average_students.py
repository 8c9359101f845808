"""Average the students of one teacher into one (a uniform "model soup", Wortsman et al. 2022).

    python scripts/average_students.py OUT A B [C ...] [--weights 0.5 0.5]

OUT becomes a copy of model directory A with its `transformer/` weights replaced by the weighted mean of the
students' (weights default to equal; they must sum to 1). The students must share the transformer
architecture (their transformer/config.json) and should be fine-tuned from the same weights (one teacher), or
the mean is meaningless. Averaged in float32 and stored in the dtype of A's weights. The shipped shapes
student is such a mean (docs/DISTILL.md, "The run that produced checkpoints/shapes").
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

WEIGHTS = "diffusion_pytorch_model.safetensors"


def average_students(out: Path, students: list[Path], weights: list[float] | None = None) -> None:
    """Write `out` (a copy of students[0]'s directory) with the weighted mean of the students' transformer weights."""
    weights = weights or [1.0 / len(students)] * len(students)
    if len(weights) != len(students) or len(students) < 2:
        raise ValueError(f"need two or more students and one weight each, got {len(students)} and {len(weights)}")
    if abs(sum(weights) - 1.0) > 1e-6:
        raise ValueError(f"the weights must sum to 1, got {sum(weights)}")
    configs = [json.loads((s / "transformer" / "config.json").read_text()) for s in students]
    for s, c in zip(students[1:], configs[1:]):
        if c != configs[0]:
            raise ValueError(f"{s}'s transformer differs from {students[0]}'s (transformer/config.json)")
    states = [load_file(s / "transformer" / WEIGHTS) for s in students]
    for s, state in zip(students[1:], states[1:]):
        if state.keys() != states[0].keys():
            raise ValueError(f"{s}'s transformer weights have other names than {students[0]}'s")
    mean = {k: sum(w * st[k].float() for w, st in zip(weights, states)).to(v.dtype) for k, v in states[0].items()}
    if out.resolve() != students[0].resolve():
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(students[0], out)
    save_file(mean, out / "transformer" / WEIGHTS, metadata={"format": "pt"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("students", type=Path, nargs="+")
    parser.add_argument("--weights", type=float, nargs="+", default=None)
    args = parser.parse_args()
    average_students(args.out, args.students, args.weights)
    print(f"{args.out / 'transformer' / WEIGHTS}: the mean of {len(args.students)} students")


if __name__ == "__main__":
    main()
