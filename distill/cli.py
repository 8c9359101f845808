"""`framecast distill STAGE --config FILE [--resume] [--device DEV] [--out DIR]`.

STAGE is one of vae, vae-decoder, teacher, ode-pairs, ode-init, self-forcing, or all (every stage in order,
then the final model directory). Several GPUs: `torchrun --nproc-per-node N $(which framecast) distill ...`
(the same entry point; under torchrun the trainer shards every role with FSDP2, distill/parallel.py).
`framecast distill plan --config X --gpus N --gpu-mem 80` prints each stage's memory per GPU (distill/plan.py).
"""

from __future__ import annotations

import argparse
import json

from distill.config import STAGES


def parse_set(items: list[str]) -> dict:
    """`a.b=value` strings -> nested dict (values parsed as YAML: numbers, lists, booleans)."""
    import yaml

    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set needs KEY=VALUE, got {item!r}")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="train the streaming student: vae, vae-decoder, teacher, ode-pairs, ode-init, self-forcing, all")
    p.add_argument("stage", choices=[*STAGES, "all", "plan"],
                   help="stage to run (all = every stage in order; plan = memory per GPU of each stage, nothing runs)")
    p.add_argument("--config", required=True, help="recipe YAML (e.g. configs/shapes.yaml)")
    p.add_argument("--resume", action="store_true", help="continue from the stage's last checkpoint (all: skip finished stages)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: the recipe's)")
    p.add_argument("--out", default=None, help="model directory to write (default: the recipe's)")
    p.add_argument("--work-dir", default=None, help="checkpoints, logs and intermediate data (default: the recipe's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe setting, e.g. --set teacher.max_steps=10 (repeatable)")
    p.add_argument("--gpus", type=int, default=8, help="plan: number of GPUs (FSDP2 ranks)")
    p.add_argument("--gpu-mem", type=float, default=80.0, help="plan: memory per GPU in GiB")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from distill.config import load_config
    from distill.errors import DistillError
    from distill.parallel import exit_finished_rank
    from distill.pipeline import Pipeline

    try:
        overrides = parse_set(args.set)
        for key, value in (("device", args.device), ("out", args.out), ("work_dir", args.work_dir)):
            if value is not None:
                overrides[key] = value
        cfg = load_config(args.config, overrides)
    except (OSError, ValueError) as exc:
        raise DistillError(str(exc)) from None
    if args.stage == "plan":
        from distill.plan import format_plan, plan

        print(format_plan(plan(cfg, args.gpus), args.gpus, args.gpu_mem, cfg.parallel.activation_checkpointing))
        return 0
    pipeline = Pipeline(cfg)  # a stage that cannot run raises StageError, a DistillError
    if args.stage == "all":
        result = pipeline.run_all(resume=args.resume)
    else:
        result = pipeline.run(args.stage, resume=args.resume)
        pipeline.finalize()
    print(json.dumps(result, indent=2))
    exit_finished_rank()  # under torchrun: every rank leaves together and exits here
    return 0
