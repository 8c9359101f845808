"""Stage `ode-pairs`: teacher ODE trajectories kept at the student's sigmas (CausVid's ODE data).

For each prompt and noise eps, the teacher's probability-flow ODE is integrated from sigma = 1
with many steps and classifier-free guidance (`FlowMatchSchedule.sample`, flow
`uncond + g * (cond - uncond)`), keeping the states at the student's sigmas. A pair is
(states [K, C, F, h, w] at the K student sigmas, x0 [C, F, h, w] at the end of the ODE).
Written as shards, one safetensors file per batch of `batch_size` pairs (`batch-000012.safetensors`:
states, x0, text states, the sigmas, and the prompts in its metadata), and read lazily by
`ODEPairStore`, which opens a shard's header and slices out only the pairs asked for: memory stays
flat in the number of pairs. Batch j's noise depends only on (seed, j), so the pairs are the same
whatever the number of ranks. Under torchrun rank r samples batches j = r, r + N, ... and writes its
own shards; a rerun skips the shards that exist (resume).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from distill.config import ODEPairsConfig
from models.schedule import FlowMatchSchedule


def cfg_model_fn(model, text: torch.Tensor, null: torch.Tensor, video_start: bool = True):
    """model_fn for `schedule.sample` with guidance: one batched pass -> (flow_cond, flow_uncond). video_start: the
    clips sampled start their videos (a stream's first latent frame at frame 0: config `video_start`)."""
    both_text = torch.cat([text, null.expand_as(text)])  # [2B, L, D]

    def fn(x, t):
        out = model(torch.cat([x, x]), torch.cat([t, t]), both_text, video_start=video_start)  # [2B, C, F, h, w]
        cond, uncond = out.float().chunk(2)
        return cond, uncond

    return fn


def lead_held(model_fn, lead: torch.Tensor):
    """model_fn for `schedule.sample(per_frame_timesteps=True)` over an image-led clip: the flow of `model_fn`
    with latent frame 0 replaced by the clean `lead` [B, C, 1, h, w] at timestep 0 all along the ODE (a start
    image is never noised). model_fn(x [B, C, F, h, w], t [B, F])."""

    def fn(x, t):
        t = t.clone()
        t[:, 0] = 0.0
        return model_fn(torch.cat([lead.to(x.dtype), x[:, :, 1:]], dim=2), t)

    return fn


def led_batches(batches: int, share: float) -> set[int]:
    """Which of `batches` batches are image-led so that `share` of them are, spread evenly (batch j is led
    when floor((j + 1) share) > floor(j share))."""
    if not 0 <= share <= 1:
        raise ValueError(f"ode_pairs.image_lead_share {share} is not in [0, 1]")
    return {j for j in range(batches) if int((j + 1) * share) > int(j * share)}


def prompt_list(source: str, n: int | None, seed: int, data_cfg=None) -> list[str]:
    """Prompts drawn from the shapes dataset ("shapes": `n` of them) or read from a prompt file
    (one per line: cycled to `n`, or every line when n is None)."""
    if source == "shapes":
        from distill.shapes_data import ShapesDataset

        if n is None:
            raise ValueError("prompts from the shapes dataset need a count")
        shapes = ShapesDataset(seed, data_cfg)
        return [shapes.sample(i, frames=1).prompt for i in range(n)]
    lines = [ln.strip() for ln in Path(source).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise ValueError(f"{source}: no prompts")
    return lines if n is None else [lines[i % len(lines)] for i in range(n)]


SHARD_PATTERN = "batch-{:06d}.safetensors"


class ODEPairStore:
    """The ODE pairs in a directory of shards, read lazily.

    `len(store)` pairs; `store.get(indices)` -> {"states": [B, K, C, F, h, w], "x0": [B, C, F, h, w],
    "text": [B, L, D]} (float32) for those pair indices, reading only their rows from disk;
    `store.sigmas` [K]; `store.prompts(indices)`; `store.lead` [N] (bool): image-led pairs, whose frame 0 is
    a clean start image held along the trajectory (shards written before these had none).
    """

    def __init__(self, directory: str | Path):
        from safetensors import safe_open

        self.dir = Path(directory)
        self.files = sorted(self.dir.glob("batch-*.safetensors"))
        if not self.files:
            raise FileNotFoundError(f"no ODE pair shards in {self.dir}")
        self.index: list[tuple[int, int]] = []  # pair -> (file number, row)
        self._prompts: list[str] = []
        leads: list[torch.Tensor] = []
        for i, path in enumerate(self.files):
            with safe_open(str(path), "pt") as f:
                rows = f.get_slice("x0").get_shape()[0]
                self._prompts += json.loads(f.metadata()["prompts"])
                leads.append(f.get_tensor("lead").bool() if "lead" in f.keys() else torch.zeros(rows, dtype=torch.bool))
                if i == 0:
                    self.sigmas = f.get_tensor("sigmas")  # [K]
                    self.state_shape = tuple(f.get_slice("states").get_shape()[1:])  # (K, C, F, h, w)
            self.index += [(i, r) for r in range(rows)]
        self.lead = torch.cat(leads)  # [N] bool: the pair's latent frame 0 is a clean start image

    def __len__(self) -> int:
        return len(self.index)

    def prompts(self, indices: list[int]) -> list[str]:
        return [self._prompts[i] for i in indices]

    def get(self, indices: list[int] | torch.Tensor,
            keys: tuple[str, ...] = ("states", "x0", "text")) -> dict[str, torch.Tensor]:
        """`keys` of those pairs (avatar pairs also hold "audio" [B, F, M, A])."""
        from safetensors import safe_open

        indices = [int(i) for i in indices]
        out: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        for i in indices:
            file, row = self.index[i]
            with safe_open(str(self.files[file]), "pt") as f:
                for key in out:
                    out[key].append(f.get_slice(key)[row:row + 1].float())
        return {k: torch.cat(v) for k, v in out.items()}


def _write_shard(path: Path, tensors: dict[str, torch.Tensor], prompts: list[str]) -> None:
    from safetensors.torch import save_file

    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"prompts": json.dumps(prompts)})
    os.replace(tmp, path)


@torch.no_grad()
def sample_ode_pairs(teacher, text_encoder, schedule: FlowMatchSchedule, latent_shape: tuple[int, int, int, int],
                     cfg: ODEPairsConfig, prompts: list[str], directory: Path, seed: int = 0,
                     device: torch.device | str = "cpu", progress: bool = True, negative_prompt: str = "",
                     rank: int = 0, world_size: int = 1, images=None, encode_image=None) -> int:
    """Sample this rank's missing shards of ODE pairs for `prompts` into `directory` (batch j of
    `cfg.batch_size` prompts goes to rank j % world_size); returns the number of pairs it wrote.

    latent_shape: (C, F, h, w) of one trajectory. The unconditional branch of CFG is `negative_prompt`.
    With `cfg.image_lead_share` > 0, that share of the batches (`led_batches`) are image-led: prompt i's
    trajectory holds the start image `encode_image(images(i, frame))` [1, C, 1, h, w] clean as its frame 0
    (`lead_held`), a random frame of prompt i's clip (`shapes_data.StartImages`), the way a stream opened
    from that image starts (models/generator.py `start_image_latents`).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    steps = cfg.steps or schedule.cfg.teacher_steps
    guidance = cfg.guidance or schedule.cfg.guidance_scale
    shift = cfg.shift or schedule.cfg.teacher_shift
    sigmas = schedule.teacher_sigmas(steps, shift)
    keep = schedule.student_sigmas()
    null = text_encoder.get(negative_prompt)[0].to(device)  # [1, L, D]
    teacher = teacher.eval()
    n_batches = -(-len(prompts) // cfg.batch_size)
    batches = [j for j in range(n_batches) if j % world_size == rank]
    led = led_batches(n_batches, cfg.image_lead_share)
    if led and (images is None or encode_image is None):
        raise ValueError("image-led ODE pairs need start images (ode_pairs.prompts: shapes)")
    todo = [j for j in batches if not (directory / SHARD_PATTERN.format(j)).exists()]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(batches), initial=len(batches) - len(todo), desc="ode-pairs", unit="batch", dynamic_ncols=True)
    start = time.perf_counter()
    written = 0
    for j in todo:
        if cfg.max_minutes > 0 and written > 0 and time.perf_counter() - start > cfg.max_minutes * 60:
            break
        first = j * cfg.batch_size
        batch = prompts[first:first + cfg.batch_size]
        text = text_encoder.get_batch(batch)[0].to(device)  # [B, L, D]
        gen = torch.Generator().manual_seed(seed * 1_000_003 + first)  # a function of the batch, not of the rank
        noise = torch.randn((len(batch), *latent_shape), generator=gen).to(device)
        model_fn = cfg_model_fn(teacher, text, null)
        if j in led:
            frames = torch.randint(0, images.frames, (len(batch),), generator=gen).tolist()
            lead = torch.cat([encode_image(images(first + r, k)) for r, k in enumerate(frames)]).to(device)  # [B, C, 1, h, w]
            model_fn = lead_held(model_fn, lead)
        x0, kept = schedule.sample(model_fn, noise, sigmas, guidance=guidance, solver=cfg.solver, keep_sigmas=keep,
                                   per_frame_timesteps=j in led)
        if j in led:
            x0[:, :, :1] = lead
            kept[:, :, :, :1] = lead
        _write_shard(directory / SHARD_PATTERN.format(j), {
            "states": kept.transpose(0, 1).float().cpu(),  # [B, K, C, F, h, w]
            "x0": x0.float().cpu(),  # [B, C, F, h, w]
            "text": text.half().cpu(),  # [B, L, D]
            "sigmas": keep.float().cpu(),  # [K]
            "lead": torch.full((len(batch),), j in led, dtype=torch.uint8),  # [B] image-led pairs
        }, list(batch))
        written += len(batch)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return written


