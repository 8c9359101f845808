"""The one training loop every distillation stage runs.

A stage is a `Method`: it owns named roles (e.g. student, teacher, critic), says which roles are
trained and how (`optim_specs`), which role updates make up one step (`updates`, e.g. the critic
five times then the student once) and computes each role's loss (`loss`). The `Trainer` does the
rest, identically for every stage: optimizers and lr warm-up, gradient accumulation, gradient
clipping, EMA of the main role, resumable checkpoints (step, weights, optimizers, EMA, RNG, the
method's own state such as its data cursor), a tqdm progress bar with the running losses, a JSONL
log, a step and wall-time budget, and -- when launched by `torchrun` -- FSDP2 sharding of every
role with a mixed-precision policy, activation checkpointing and gradient accumulation without a
reduce-scatter on every micro-step (distill/parallel.py). A single process (the CPU default) never
touches torch.distributed.
"""

from __future__ import annotations

import abc

import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distill.config import StageConfig
from distill.ema import EMA
from distill.parallel import (ParallelConfig, average_gradients, broadcast_ints, distributed, full_state_dict,
                              gather_objects, is_main_process, load_full_state_dict, load_optimizer_state,
                              optimizer_state, rank, rank_seed, set_gradient_sync, shard_module, shardable, world_size)

CKPT_FILE = "ckpt.pt"
LOG_FILE = "log.jsonl"


@dataclass
class OptimSpec:
    """How one trained role is optimised (AdamW)."""

    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0


class Method(abc.ABC):
    """Base class of a stage's training method (see the module docstring)."""

    main_role: str = "student"  # the role whose updates count as steps and get the EMA

    @abc.abstractmethod
    def roles(self) -> dict[str, nn.Module]:
        """Every module the method uses, trained or frozen."""

    @abc.abstractmethod
    def optim_specs(self) -> dict[str, OptimSpec]:
        """The trained roles and their optimizer settings."""

    def updates(self, step: int) -> list[str]:
        """Role updates making up optimizer step `step`, in order (default: the main role once)."""
        return [self.main_role]

    @abc.abstractmethod
    def loss(self, role: str, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """One micro-batch loss for `role` and the scalars to log."""

    def state_dict(self) -> dict:
        """Method state that a resume must restore (e.g. data generators)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def sample_ids(self) -> list:
        """Identifiers of the samples this rank's last micro-batch drew (logged per rank when
        distributed, so a run shows that ranks train on different samples)."""
        return []


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------

class Trainer:
    def __init__(self, method: Method, cfg: StageConfig, work_dir: str | Path, name: str = "train",
                 seed: int = 0, progress: bool = True, parallel: ParallelConfig | None = None):
        self.method = method
        self.cfg = cfg
        self.work_dir = Path(work_dir)
        self.name = name
        self.seed = seed
        self.progress = progress
        self.step = 0
        self.elapsed = 0.0  # seconds trained so far (over resumes)
        self.distributed = distributed()
        if self.distributed:
            par = parallel or ParallelConfig()
            trained = method.optim_specs()
            for role, module in method.roles().items():
                if shardable(module) and (role in trained or par.shard_frozen):
                    shard_module(module, par, trained=role in trained)
        self.replicated = {role for role in method.optim_specs() if self.distributed and not shardable(method.roles()[role])}
        modules = method.roles()
        self.optimizers = {
            role: torch.optim.AdamW([p for p in modules[role].parameters() if p.requires_grad], lr=spec.lr,
                                    betas=spec.betas, weight_decay=spec.weight_decay)
            for role, spec in method.optim_specs().items()
        }
        self.base_lrs = {role: spec.lr for role, spec in method.optim_specs().items()}
        main = modules[method.main_role]
        self.ema = EMA(main, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.history: list[dict] = []  # the JSONL records of this run

    # ---- checkpoints
    @property
    def ckpt_path(self) -> Path:
        return self.work_dir / CKPT_FILE

    def save_checkpoint(self) -> None:
        modules = self.method.roles()
        state = {
            "step": self.step,
            "elapsed": self.elapsed,
            "models": {role: full_state_dict(modules[role]) for role in self.optimizers},
            "optimizers": {role: optimizer_state(modules[role], opt) for role, opt in self.optimizers.items()},
            "ema": self.ema.state_dict() if self.ema else None,
            # per rank: each rank's global RNG is seeded differently (parallel.rank_seed)
            "rng": gather_objects({"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}),
            "method": self.method.state_dict(),
        }
        if is_main_process():
            self.work_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.ckpt_path.with_suffix(".tmp")
            torch.save(state, tmp)
            os.replace(tmp, self.ckpt_path)

    def load_checkpoint(self) -> bool:
        if not self.ckpt_path.exists():
            return False
        state = torch.load(self.ckpt_path, map_location="cpu", weights_only=False)
        modules = self.method.roles()
        for role in self.optimizers:
            load_full_state_dict(modules[role], state["models"][role])
            load_optimizer_state(modules[role], self.optimizers[role], state["optimizers"][role])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        rngs = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]
        if len(rngs) == world_size():  # else (resumed on another number of ranks) keep the fresh rank seeds
            rng = rngs[rank()]
            torch.set_rng_state(rng["torch"])
            np.random.set_state(rng["numpy"])
            random.setstate(rng["python"])
        self.method.load_state_dict(state["method"])
        self.step = int(state["step"])
        self.elapsed = float(state["elapsed"])
        return True

    # ---- one optimizer step
    def _budget_used(self) -> float:
        """Share of the stage's budget spent, in [0, 1]: steps or wall time, whichever runs out first."""
        used = self.step / self.cfg.max_steps if self.cfg.max_steps > 0 else 0.0
        if self.cfg.max_minutes > 0:
            used = max(used, self.elapsed / (self.cfg.max_minutes * 60.0))
        return min(1.0, used)

    def _set_lr(self) -> None:
        """Linear warm-up over `warmup_steps`, then constant, then (with `cooldown` c > 0) a linear
        decay to 0 over the last share c of the budget (a warmup-stable-decay schedule)."""
        warm = self.cfg.warmup_steps
        factor = min(1.0, (self.step + 1) / warm) if warm > 0 else 1.0
        if self.cfg.cooldown > 0:
            factor *= min(1.0, (1.0 - self._budget_used()) / self.cfg.cooldown)
        for role, opt in self.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = self.base_lrs[role] * factor

    def _update(self, role: str) -> dict[str, float]:
        module = self.method.roles()[role]
        opt = self.optimizers[role]
        opt.zero_grad(set_to_none=True)
        logs: dict[str, float] = {}
        for micro in range(self.cfg.grad_accum):
            set_gradient_sync(module, micro == self.cfg.grad_accum - 1)  # reduce-scatter once, after the last micro-step
            loss, micro_logs = self.method.loss(role, self.step)
            (loss / self.cfg.grad_accum).backward()
            for k, v in micro_logs.items():
                logs[k] = logs.get(k, 0.0) + float(v) / self.cfg.grad_accum
        if role in self.replicated:
            average_gradients(module)
        if self.cfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_([p for p in module.parameters() if p.requires_grad], self.cfg.grad_clip)
            logs[f"{role}_grad_norm"] = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if role == self.method.main_role and self.ema is not None:
            self.ema.update(module)
        return logs

    def _done(self) -> bool:
        if self.step >= self.cfg.max_steps:
            return True
        budget = self.cfg.max_minutes * 60.0
        return budget > 0 and self.elapsed >= budget  # the same figure the run reports

    # ---- the loop
    def run(self, resume: bool = False) -> dict:
        """Train until max_steps or max_minutes; returns {step, elapsed_s, losses (last window means)}."""
        seed = rank_seed(self.seed)  # = self.seed on rank 0 (and in a single process)
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        if resume:
            self.load_checkpoint()
            self._truncate_log()
        elif is_main_process() and (self.work_dir / LOG_FILE).exists():
            (self.work_dir / LOG_FILE).unlink()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        bar = None
        if self.progress and is_main_process():
            from tqdm import tqdm

            # the bar counts the budget (steps or minutes, whichever ends first), so its ETA is the stage's
            bar = tqdm(total=100.0, initial=round(100 * self._budget_used(), 1), desc=self.name, dynamic_ncols=True,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}")
        run_start, start_elapsed = time.perf_counter(), self.elapsed
        window: dict[str, list[float]] = {}
        last: dict[str, float] = {}
        while not self._done():
            self._set_lr()
            for role in self.method.updates(self.step):
                for k, v in self._update(role).items():
                    window.setdefault(k, []).append(v)
            self.step += 1
            self.elapsed = start_elapsed + time.perf_counter() - run_start
            if self.distributed:  # rank 0's clock, so every rank sets the same lr and stops at the same step
                self.elapsed = broadcast_ints([round(self.elapsed * 1e6)])[0] / 1e6
            if bar is not None:
                bar.update(round(100 * self._budget_used(), 1) - bar.n)
                bar.set_postfix({"step": self.step, **{k: f"{np.mean(v):.4f}" for k, v in window.items()
                                                       if not k.endswith("grad_norm")}})
            done = self._done()
            if self.step % self.cfg.log_every == 0 or done:
                last = self._window_means(window)
                record = {"step": self.step, "elapsed_s": round(self.elapsed, 2), **last}
                if self.distributed:
                    record["rank_samples"] = gather_objects(self.method.sample_ids())
                self._log(record)
                window = {}
            if self.step % self.cfg.ckpt_every == 0:
                self.save_checkpoint()
            if done:
                break
        if window:
            last = self._window_means(window)
        self.save_checkpoint()
        if bar is not None:
            bar.close()
        return {"step": self.step, "elapsed_s": round(self.elapsed, 2), "losses": last}

    def _window_means(self, window: dict[str, list[float]]) -> dict[str, float]:
        """Mean of each logged value over the window and, when distributed, over the ranks (every
        rank's loss is over its own samples; grad norms are already global)."""
        means = {k: float(np.mean(v)) for k, v in window.items()}
        if self.distributed:
            per_rank = gather_objects(means)
            means = {k: float(np.mean([r[k] for r in per_rank])) for k in means}
        return means

    def _truncate_log(self) -> None:
        """Drop log lines past the checkpoint's step (written after the last save of an interrupted run)."""
        path = self.work_dir / LOG_FILE
        if not is_main_process() or not path.exists():
            return
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= self.step]
        path.write_text("".join(ln + "\n" for ln in lines))

    def _log(self, record: dict) -> None:
        self.history.append(record)
        if is_main_process():
            with open(self.work_dir / LOG_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")

    # ---- results
    def export(self, role: str, module: nn.Module, use_ema: bool = True) -> nn.Module:
        """Copy the trained weights of `role` (the EMA for the main role when kept) into `module`,
        an unsharded module of the same architecture; returns it."""
        load_state = full_state_dict(self.method.roles()[role], every_rank=True)
        module.load_state_dict(load_state)
        if use_ema and self.ema is not None and role == self.method.main_role:
            self.ema.copy_to(module)
        return module
