"""ODE-init and Self-Forcing steps of tiny random models, run by one process or under torchrun.

`python -m torch.distributed.run --nproc-per-node N tests/distill/parallel_worker.py OUT PAIRS BATCH`
trains with FSDP2 on N ranks (per-rank batch BATCH); `train(OUT, PAIRS, BATCH)` called in a plain
process is the single-process reference. Rank 0 saves {history, weights, rank samples} to OUT.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from distill.ode_init import ODERegressionMethod  # noqa: E402
from distill.ode_pairs import ODEPairStore  # noqa: E402
from distill.parallel import exit_finished_rank, full_state_dict, init_distributed, is_main_process, launched  # noqa: E402
from distill.self_forcing import SelfForcingDMD  # noqa: E402
from tests.distill.tiny_recipe import tiny_recipe  # noqa: E402
from distill.trainer import Trainer  # noqa: E402
from models.generator import StreamingGenerator  # noqa: E402
from models.model_dir import random_transformer  # noqa: E402
from models.schedule import FlowMatchSchedule  # noqa: E402
from models.text_encoders import build_text_encoder  # noqa: E402
from models.vae import VideoVAE  # noqa: E402

PROMPTS = ["a red circle", "a blue square on black", "two green triangles", "a yellow circle", "a white square",
           "three red triangles on gray", "a cyan circle on navy", "an orange square"]


def train(out: str | Path, pairs_dir: str | Path, batch: int, steps: int = 2) -> None:
    torch.set_num_threads(1)
    if launched():
        init_distributed(torch.device("cpu"))
    recipe = tiny_recipe(Path(out).parent / "recipe")
    cfg = recipe.model_config()
    schedule = FlowMatchSchedule(cfg.schedule)
    result: dict = {}

    # ode-init: the student regresses the (shared) ODE pairs
    student = random_transformer(cfg, seed=2)
    oc = dataclasses.replace(recipe.ode_init, batch_size=batch, max_steps=steps, lr=2e-3, ckpt_every=10_000)
    method = ODERegressionMethod(student, schedule, ODEPairStore(pairs_dir), cfg.stream.chunk_frames, oc, seed=0)
    trainer = Trainer(method, oc, Path(out).parent / "ode-init", progress=False, parallel=recipe.parallel)
    trainer.run()
    result["ode_init"] = {"history": trainer.history, "weights": full_state_dict(student)}

    # self-forcing: a fresh student, teacher and critic
    torch.manual_seed(0)
    vae = VideoVAE.from_config(cfg.vae).eval()
    teacher = random_transformer(cfg, seed=3).requires_grad_(False)
    critic = copy.deepcopy(teacher).requires_grad_(True)
    student = random_transformer(cfg, seed=4)
    sc = dataclasses.replace(recipe.self_forcing, batch_size=batch, max_steps=1, critic_steps=1, lr=1e-3,
                             critic_lr=1e-3, ckpt_every=10_000)
    gen = StreamingGenerator(cfg, student, vae, build_text_encoder(cfg.text_encoder), max_batch=batch)
    method = SelfForcingDMD(gen, teacher, critic, PROMPTS, sc, seed=0)
    trainer = Trainer(method, sc, Path(out).parent / "self-forcing", progress=False, parallel=recipe.parallel)
    trainer.run()
    result["self_forcing"] = {"history": trainer.history, "weights": full_state_dict(student),
                              "critic": full_state_dict(critic)}
    if is_main_process():
        torch.save(result, out)


if __name__ == "__main__":
    train(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    exit_finished_rank()
