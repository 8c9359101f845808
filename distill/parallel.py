"""Data parallelism for the distillation stages: torch.distributed + FSDP2, and per-rank data.

A single process (the CPU default) never touches torch.distributed: every helper here reduces to
the identity for one rank. Under `torchrun` (the environment variables RANK / WORLD_SIZE are set):

- each role is sharded with FSDP2 (`fully_shard` per transformer block, then the root), with a
  mixed-precision policy (`ParallelConfig.param_dtype` for compute, fp32 master weights and
  `reduce_dtype` gradient reductions); frozen roles (the teacher) are sharded too and can be
  offloaded to host memory; block-level activation checkpointing is the model's own
  `gradient_checkpointing`;
- randomness: every rank holds the same *global* generator and draws the whole global batch
  (world_size x batch_size samples) each step, then keeps its own slice (`rank_slice`), like a
  `DistributedSampler` over a shared permutation. So rank r's samples at step s are a function of
  (seed, r, s); ranks never train on the same sample; one rank with the doubled batch draws exactly
  the union of two ranks' samples (the 2-rank test compares the two); and choices every rank must
  make alike (the rollout's exit steps, which fix the number of forward passes and so the order of
  collectives) are identical, and are broadcast from rank 0 all the same (`broadcast_ints`).
"""

from __future__ import annotations

import atexit
import os
import sys
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ParallelConfig:
    """How the training stages use several processes (ignored by a single process)."""

    param_dtype: str = "bfloat16"  # FSDP2 compute dtype of gathered parameters (master weights stay fp32)
    reduce_dtype: str = "float32"  # dtype of the gradient reduce-scatter
    activation_checkpointing: bool = True  # recompute each transformer block in backward (trained roles)
    shard_frozen: bool = True  # shard the frozen roles (teacher / real score) too, instead of a full copy per rank
    offload_frozen: bool = False  # keep the frozen roles' shards in host memory (FSDP2 CPUOffloadPolicy; CUDA only)
    text_encoder_device: str = ""  # e.g. "cpu": run the text encoder there (prompt states are cached) ("" = the training device)
    reshard_after_forward: bool = True  # free gathered parameters after each block's forward (ZeRO-3); False = ZeRO-2


def launched() -> bool:
    """True under torchrun (or any launcher that sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def distributed() -> bool:
    """True when torch.distributed is initialised (several processes, or torchrun with one)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def init_distributed(device: torch.device) -> torch.device:
    """Join the process group the launcher set up; returns this rank's device."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(shutdown_distributed)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device


def shutdown_distributed() -> None:
    """Leave the process group (joining its threads). Registered at exit by `init_distributed`: a rank
    that exits with gloo's threads alive can abort ("terminate called without an active exception",
    SIGABRT), and torchrun then fails a finished run. No barrier here: a rank that fails must exit
    at once so that torchrun stops the others, not wait for them."""
    import torch.distributed as dist

    if distributed():
        dist.destroy_process_group()


def exit_finished_rank(code: int = 0) -> None:
    """End a rank whose run finished: wait for every rank, leave the group, flush, and exit now.

    The exit hook above alone still let a finished rank abort now and then (SIGABRT, "terminate called
    without an active exception", in CI on a two-rank run that had written its results): a rank leaving
    while its peer still used the group, or a gloo thread met by the C++ static destructors at
    interpreter exit. Here the ranks leave together after a barrier, and `os._exit` skips those
    destructors. Call it only after every file is written and closed; a no-op outside a process group."""
    if not distributed():
        return
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def barrier() -> None:
    if distributed():
        import torch.distributed as dist

        dist.barrier()


def rank_seed(seed: int, r: int | None = None) -> int:
    """A rank's seed for its own streams (the global torch RNG): `seed` itself on rank 0, so one
    process reproduces the single-process run, a distinct value on every other rank."""
    r = rank() if r is None else r
    return seed if r == 0 else int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(seed * 7919 + r)))


def global_batch(batch_size: int) -> int:
    """Samples drawn per step by every rank's global generator: world_size x batch_size."""
    return world_size() * batch_size if distributed() else batch_size


def rank_slice(x, batch_size: int, groups: int = 1):
    """This rank's part of a globally drawn batch.

    x: a tensor or list whose leading dimension is `groups` consecutive groups of the global batch
    (e.g. windows of a rollout, window-major); returns the rank's `batch_size` rows of every group.
    """
    if not distributed():
        return x
    g = global_batch(batch_size)
    r = rank()
    rows = [k * g + r * batch_size + j for k in range(groups) for j in range(batch_size)]
    if isinstance(x, torch.Tensor):
        return x[torch.tensor(rows, dtype=torch.long)]
    return [x[i] for i in rows]


def broadcast_ints(values: list[int]) -> list[int]:
    """`values` as rank 0 has them (every rank must call this with a list of the same length)."""
    if not distributed():
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.long)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.broadcast(t, src=0)
    return t.cpu().tolist()


def gather_objects(obj) -> list:
    """Every rank's `obj` (a list in rank order); [obj] for one process."""
    if not distributed():
        return [obj]
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _dtype(name: str) -> torch.dtype:
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return value


def shard_module(module: nn.Module, cfg: ParallelConfig, trained: bool) -> nn.Module:
    """FSDP2: `fully_shard` each transformer block, then the root, with `cfg`'s mixed-precision
    policy; frozen roles optionally offloaded. `forward_stream`/`text_kv` (root) and `cross_kv`
    (blocks) are registered as forward methods, so calling them gathers the parameters they use."""
    from torch.distributed.fsdp import (CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard,
                                        register_fsdp_forward_method)

    mp = MixedPrecisionPolicy(param_dtype=_dtype(cfg.param_dtype), reduce_dtype=_dtype(cfg.reduce_dtype))
    offload = OffloadPolicy()
    device = next(module.parameters()).device
    if not trained and cfg.offload_frozen and device.type == "cuda":
        offload = CPUOffloadPolicy()
    kw = dict(mp_policy=mp, offload_policy=offload, reshard_after_forward=cfg.reshard_after_forward)
    with torch.no_grad():  # FSDP2 shards contiguous parameters only (the VAE's conv weights may not be)
        for p in module.parameters():
            if not p.is_contiguous():
                p.data = p.data.contiguous()
    blocks = getattr(module, "blocks", None)
    if blocks is not None:
        for block in blocks:
            fully_shard(block, **kw)
            register_fsdp_forward_method(block, "cross_kv")
    fully_shard(module, **kw)
    for name in ("forward_stream", "text_kv"):
        if hasattr(module, name):
            register_fsdp_forward_method(module, name)
    if trained and cfg.activation_checkpointing and hasattr(module, "gradient_checkpointing"):
        module.gradient_checkpointing = True
    return module


def shardable(module: nn.Module) -> bool:
    """Transformers are sharded with FSDP2; other trained modules (the small shapes VAE, whose
    stages call its encode/decode methods rather than forward) are replicated, gradients averaged."""
    return hasattr(module, "blocks")


def average_gradients(module: nn.Module) -> None:
    """Plain data parallelism for a replicated module: all-reduce the gradients to their mean."""
    if not distributed():
        return
    import torch.distributed as dist

    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def _sharded(module: nn.Module) -> bool:
    return any(hasattr(p, "full_tensor") for p in module.parameters())


def full_state_dict(module: nn.Module, every_rank: bool = False) -> dict[str, torch.Tensor]:
    """Unsharded CPU state dict (gathers FSDP2 shards; every rank must call it). Sharded, only rank 0
    receives it unless `every_rank` (then each rank briefly holds the full weights on its device)."""
    if distributed() and _sharded(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        if every_rank:
            state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True))
            return {k: v.detach().cpu() for k, v in state.items()}
        return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def load_full_state_dict(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    if distributed() and _sharded(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True))
    else:
        module.load_state_dict(state)


def optimizer_state(module: nn.Module, opt: torch.optim.Optimizer) -> dict:
    if distributed() and _sharded(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(module, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return opt.state_dict()


def load_optimizer_state(module: nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    if distributed() and _sharded(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(module, opt, state, options=StateDictOptions(full_state_dict=True))
    else:
        opt.load_state_dict(state)


def set_gradient_sync(module: nn.Module, sync: bool) -> None:
    """Gradient accumulation: skip the reduce-scatter on all but the last micro-step."""
    if distributed() and hasattr(module, "set_requires_gradient_sync"):
        module.set_requires_gradient_sync(sync)
