"""Exponential moving average of a module's weights (the shipped student is the EMA)."""

from __future__ import annotations

import torch
from torch import nn


def _full(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a (possibly FSDP2-sharded DTensor) parameter."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


class EMA:
    """shadow <- decay * shadow + (1 - decay) * param, after every optimizer step of the module."""

    def __init__(self, module: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.names = [n for n, p in module.named_parameters() if p.requires_grad]
        params = dict(module.named_parameters())
        self.shadow = {n: params[n].detach().clone().float() for n in self.names}  # local shards under FSDP2

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        params = dict(module.named_parameters())
        for n in self.names:
            self.shadow[n].lerp_(params[n].detach().float(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Full (unsharded) EMA weights on the CPU, keyed like the module's parameters."""
        return {n: _full(t).detach().cpu() for n, t in self.shadow.items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for n in self.names:
            src = state[n]
            dst = self.shadow[n]
            if hasattr(dst, "full_tensor"):  # sharded: take this rank's slice of the full tensor
                from torch.distributed.tensor import distribute_tensor

                dst.copy_(distribute_tensor(src.to(dst.device), dst.device_mesh, dst.placements))
            else:
                dst.copy_(src.to(dst.device))

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Load the EMA weights into `module` (an unsharded module of the same architecture)."""
        params = dict(module.named_parameters())
        for n, t in self.state_dict().items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))
