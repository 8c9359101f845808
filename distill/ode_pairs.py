"""Stage `ode-pairs`: teacher ODE trajectories kept at the student's sigmas (CausVid's ODE data).

For each prompt and noise eps, the teacher's probability-flow ODE is integrated from sigma = 1
with many steps and classifier-free guidance (`FlowMatchSchedule.sample`, flow
`uncond + g * (cond - uncond)`), keeping the states at the student's sigmas. A pair is
(states [K, C, F, h, w] at the K student sigmas, x0 [C, F, h, w] at the end of the ODE).
Saved incrementally to `ode_pairs.pt` in the work directory, so an interrupted run resumes.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from distill.config import ODEPairsConfig
from models.schedule import FlowMatchSchedule


def cfg_model_fn(model, text: torch.Tensor, null: torch.Tensor):
    """model_fn for `schedule.sample` with guidance: one batched pass -> (flow_cond, flow_uncond)."""
    both_text = torch.cat([text, null.expand_as(text)])  # [2B, L, D]

    def fn(x, t):
        out = model(torch.cat([x, x]), torch.cat([t, t]), both_text)  # [2B, C, F, h, w]
        cond, uncond = out.float().chunk(2)
        return cond, uncond

    return fn


def prompt_list(source: str, n: int, seed: int, data_cfg=None) -> list[str]:
    """`n` prompts: drawn from the shapes dataset ("shapes") or cycled from a prompt file."""
    if source == "shapes":
        from distill.shapes_data import ShapesDataset

        shapes = ShapesDataset(seed, data_cfg)
        return [shapes.sample(i, frames=1).prompt for i in range(n)]
    lines = [ln.strip() for ln in Path(source).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise ValueError(f"{source}: no prompts")
    return [lines[i % len(lines)] for i in range(n)]


@torch.no_grad()
def sample_ode_pairs(teacher, text_encoder, schedule: FlowMatchSchedule, latent_shape: tuple[int, int, int, int],
                     cfg: ODEPairsConfig, prompts: list[str], path: Path, seed: int = 0,
                     device: torch.device | str = "cpu", progress: bool = True) -> dict:
    """Sample (or continue sampling) ODE pairs for `prompts` into `path`; returns the saved dict.

    latent_shape: (C, F, h, w) of one trajectory.
    """
    path = Path(path)
    data = torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None
    done = 0 if data is None else data["x0"].shape[0]
    steps = cfg.steps or schedule.cfg.teacher_steps
    guidance = cfg.guidance or schedule.cfg.guidance_scale
    shift = cfg.shift or schedule.cfg.teacher_shift
    sigmas = schedule.teacher_sigmas(steps, shift)
    keep = schedule.student_sigmas()
    null = text_encoder.get("")[0].to(device)  # [1, L, D]
    teacher = teacher.eval()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(prompts), initial=done, desc="ode-pairs", dynamic_ncols=True)
    start = time.perf_counter()
    while done < len(prompts):
        if cfg.max_minutes > 0 and done > 0 and time.perf_counter() - start > cfg.max_minutes * 60:
            break
        batch = prompts[done:done + cfg.batch_size]
        text = text_encoder.get_batch(batch)[0].to(device)  # [B, L, D]
        gen = torch.Generator().manual_seed(seed * 1_000_003 + done)
        noise = torch.randn((len(batch), *latent_shape), generator=gen).to(device)
        x0, kept = schedule.sample(cfg_model_fn(teacher, text, null), noise, sigmas, guidance=guidance,
                                   solver=cfg.solver, keep_sigmas=keep)
        part = {"states": kept.transpose(0, 1).float().cpu(), "x0": x0.float().cpu(),  # [B, K, C, F, h, w], [B, C, F, h, w]
                "text": text.half().cpu(), "prompts": list(batch)}
        if data is None:
            data = part
        else:
            data = {k: (data[k] + part[k] if k == "prompts" else torch.cat([data[k], part[k]])) for k in part}
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(data, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        done += len(batch)
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    data["sigmas"] = keep
    return data
