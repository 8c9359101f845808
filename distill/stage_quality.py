"""Where quality is lost, stage by stage: the same prompts and seeds scored at every step of the
shapes recipe, with the same scorer (`distill.scoring`).

| row | what is scored |
|---|---|
| clips | the ground-truth shapes videos of the prompts (`ShapesDataset(seed).sample_for_prompt`) |
| vae | those clips encoded and decoded by the model's VAE (the ceiling of everything downstream) |
| teacher | the bidirectional teacher sampled with many steps + CFG (`TeacherSampler`) |
| ode-init | the causal student after ODE regression, streamed (a transformer folder or `work/ode-init/ckpt.pt`) |
| student | the shipped student (after Self-Forcing DMD), streamed |

Each row is the mean `score_video` over prompts x seeds of `frames` frames; rows whose model is
missing are left out. `framecast eval --stages` prints and writes the table, and beside it the VAE's
error over a 6-s clip decoded as a stream (`distill.stream_reconstruction`), which a 1.3-s row cannot show.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from distill.eval_cli import _mean_of, evaluate, evaluate_teacher
from distill.scoring import WindowScore, WindowScorer, shapes_by_kind
from distill.shapes_data import ShapesDataset
from distill.config import ShapesDataConfig
from models.vae import VideoVAE, frames_to_uint8, uint8_to_video

ROWS: tuple[str, ...] = ("clips", "vae", "teacher", "ode-init", "student")


def ground_truth_clips(prompts: list[str], seeds: list[int], frames: int, width: int, height: int,
                       fps: int) -> list[np.ndarray]:
    """uint8 `[frames, H, W, 3]` ground-truth clip per (prompt, seed), prompts outer, seeds inner."""
    cfg = dataclasses.replace(ShapesDataConfig(), width=width, height=height, fps=fps, frames=frames)
    return [ShapesDataset(seed, cfg).sample_for_prompt(p).video for p in prompts for seed in seeds]


@torch.no_grad()
def reconstruct(vae: VideoVAE, clips: list[np.ndarray], batch_size: int = 8) -> list[np.ndarray]:
    """Encode (posterior mean) and decode each clip; `T` must be 1 + k * temporal_compression."""
    out = []
    for start in range(0, len(clips), batch_size):
        video = uint8_to_video(np.stack(clips[start:start + batch_size])).to(vae.device)  # [b, 3, T, H, W]
        out.extend(frames_to_uint8(vae.decode(vae.encode(video))))  # [b, T, H, W, 3] each
    return out


def score_clips(clips: list[np.ndarray], prompts: list[str], seeds: list[int], fps: int) -> dict:
    """Mean score (overall + components) of clips ordered as `ground_truth_clips` returns them."""
    scored = []
    for clip, prompt in zip(clips, [p for p in prompts for _ in seeds]):
        scorer = WindowScorer(prompt, fps, window_seconds=len(clip) / fps + 1.0)  # one window per clip
        scorer.push(clip)
        scored.extend((prompt, w) for w in scorer.finish())
    return _row(scored)


def _row(scored: list[tuple[str, WindowScore]]) -> dict:
    """A row of the table: the mean score and components of (prompt, window) pairs, and shapes per kind."""
    return {**_mean_of([w for _, w in scored]),
            "shapes_by_kind": shapes_by_kind([(p, w.components["shapes"]) for p, w in scored])}


def stage_table(model: str, prompts: list[str], seeds: list[int], seconds: float, *, ode_init: str | None = None,
                teacher_steps: int | None = None, guidance: float | None = None, device: str | None = None,
                max_batch: int = 4, log=print) -> dict:
    """{row: {"overall", "components", "wall_s"}} for every row of `ROWS` that `model` allows.

    `model` is a model directory (its `vae/`, `teacher/` and `transformer/` are the vae, teacher and
    student rows); `ode_init` a model directory or a trainer checkpoint `ckpt.pt` of the ode-init stage.
    """
    from distill.eval_cli import frames_per_run
    from models import load_generator
    from models.model_dir import load_vae, resolve_model

    source = resolve_model(model)  # a directory, or a preset (random weights: path None)
    cfg = source.config

    def has(part: str) -> bool:
        return source.path is None or (source.path / part / "config.json").exists()

    fps = cfg.stream.fps
    tc = cfg.vae.temporal_compression
    frames = frames_per_run(seconds, fps)
    clip_frames = 1 + tc * max(1, -(-(frames - 1) // tc))  # the VAE wants 1 + k * tc frames
    rows: dict[str, dict] = {}

    def timed(name, fn):
        start = time.perf_counter()
        rows[name] = {**fn(), "wall_s": round(time.perf_counter() - start, 2)}
        log(f"[stages] {name}: {rows[name]['overall']:.3f} ({rows[name]['wall_s']:.0f} s)")

    clips = ground_truth_clips(prompts, seeds, clip_frames, cfg.stream.width, cfg.stream.height, fps)
    timed("clips", lambda: score_clips([c[:frames] for c in clips], prompts, seeds, fps))
    vae = load_vae(source, device=torch.device(device or "cpu")).eval()
    timed("vae", lambda: score_clips([c[:frames] for c in reconstruct(vae, clips)], prompts, seeds, fps))
    rows["vae"]["streamed"] = vae_over_time(vae, prompts[:4], seeds[0], cfg, log)
    if has("teacher"):
        from distill.teacher_sampler import TeacherSampler

        sampler = TeacherSampler(model, device=device, steps=teacher_steps, guidance=guidance)
        timed("teacher", lambda: _row([(r.prompt, w) for r in evaluate_teacher(sampler, prompts, seeds, seconds,
                                                                                seconds + 1.0, max_batch) for w in r.windows]))
    if ode_init is not None:
        gen = generator_with(model, ode_init, device, max_batch)
        timed("ode-init", lambda: _streamed(gen, prompts, seeds, seconds))
    if has("transformer"):
        gen = load_generator(model, device=device, max_batch=max_batch)
        timed("student", lambda: _streamed(gen, prompts, seeds, seconds))
    return rows


def vae_over_time(vae: VideoVAE, prompts: list[str], seed: int, cfg, log=print, seconds: float = 6.0) -> dict:
    """`streamed_error` of 2-s windows over `seconds`-long ground-truth clips of `prompts` (one seed)."""
    from distill.stream_reconstruction import streamed_error

    fps, tc = cfg.stream.fps, cfg.vae.temporal_compression
    clips = ground_truth_clips(prompts, [seed], 1 + tc * int(seconds * fps / tc), cfg.stream.width, cfg.stream.height, fps)
    result = streamed_error(vae, clips, window_frames=2 * fps)
    log(f"[stages] vae streamed over {seconds:g} s: error per 2-s window {result['windows']} (levels 0-255), "
        f"last / first {result['last_over_first']:.2f}")
    return result


def _streamed(gen, prompts: list[str], seeds: list[int], seconds: float) -> dict:
    return _row([(r.prompt, w) for r in evaluate(gen, prompts, seeds, seconds, seconds + 1.0) for w in r.windows])


def generator_with(model: str, transformer: str, device: str | None = None, max_batch: int = 4):
    """The streaming generator of `model` with its student replaced by `transformer`: a transformer
    folder, a model directory, or a stage's trainer checkpoint (`work/ode-init/ckpt.pt`)."""
    from models import load_generator
    from models.transformer import CausalWanTransformer

    gen = load_generator(model, device=device, max_batch=max_batch)
    path = Path(transformer)
    if not path.exists():
        raise FileNotFoundError(f"no ode-init student at {path} (a transformer folder, model directory or ckpt.pt)")
    if path.is_file():  # a trainer checkpoint (distill/trainer.py): {"models": {"student": sd}, "ema": sd | None}
        state = torch.load(path, map_location="cpu", weights_only=False)
        weights = {**state["models"]["student"], **(state.get("ema") or {})}  # the EMA is what the stage exports
    else:
        folder = path / "transformer" if (path / "transformer").is_dir() else path
        weights = CausalWanTransformer.from_pretrained(folder, device="cpu").state_dict()
    gen.transformer.load_state_dict({k: v.to(gen.device) for k, v in weights.items()})
    return gen
