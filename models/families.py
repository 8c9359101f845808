"""Streaming settings of the published causal Wan2.1 students, read from their released code.

Each family's values come from its repository's inference config and the inference / attention
code that uses them (the file is cited per family; read at the commit named). In those codebases
`local_attn_size` counts the *current chunk too*, while framecast's `window_frames` counts only
frames before it: window_frames = attended frames - sink_frames - chunk_frames.

`warp_denoising_step: true` in these configs maps step t to the FlowMatchScheduler grid of
`timestep_shift` (sigma = shift * s / (1 + (shift - 1) * s), s = t / 1000): exactly framecast's
`ScheduleConfig(student_timesteps, shift)`. Without warping (CausVid's published DMD config) the
listed timesteps are used as they are, i.e. shift 1.

Where framecast deliberately differs (docs/SERVING.md says the same for users):
- Rolling past the trained length: Self-Forcing and CausVid keep one global cache of 21 latent
  frames (the length they were trained on; the released Self-Forcing stops at 81 video frames).
  framecast keeps those 21 frames attended (window 18 + chunk 3) and then rolls the window, with
  window-relative RoPE positions, so a stream never ends (quality past 21 frames is the model's).
- Reward Forcing's "EMA sink" blends evicted frames into the sink (alpha 0.999); framecast's sink
  keeps the stream's first frames unchanged.
- Rolling Forcing denoises a window of 5 chunks jointly at staggered noise levels; framecast
  denoises one chunk at a time through the same timesteps (each chunk still sees the sink and
  the window of clean frames before it).
- Context noise is 0 in every published config: the commit pass runs at t = 0 as framecast does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from models.config import ModelConfig, ScheduleConfig, StreamConfig


@dataclass(frozen=True)
class Family:
    name: str
    chunk_frames: int  # latent frames per chunk (`num_frame_per_block`)
    sink_frames: int  # frames pinned at the start of the cache (`sink_size`)
    window_frames: int  # frames attended before the current chunk, besides the sink
    student_timesteps: tuple[int, ...]  # `denoising_step_list` without a trailing 0
    shift: float  # `timestep_shift` when the steps are warped, else 1.0
    source: str  # where the values were read
    cache: str  # how the published code caches, in a phrase


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family(
        "self-forcing", chunk_frames=3, sink_frames=0, window_frames=18, student_timesteps=(1000, 750, 500, 250), shift=5.0,
        source="guandeh17/Self-Forcing@33593df configs/self_forcing_dmd.yaml (denoising_step_list, warp_denoising_step, "
               "timestep_shift 5, num_frame_per_block 3); pipeline/causal_inference.py (kv_cache_size 32760 = 21 frames)",
        cache="global cache of 21 latent frames, no sink",
    ),
    Family(
        "causvid", chunk_frames=3, sink_frames=0, window_frames=18, student_timesteps=(1000, 757, 522), shift=1.0,
        source="tianweiy/CausVid@ca21150 configs/wan_causal_dmd.yaml (denoising_step_list 1000/757/522/0, "
               "warp_denoising_step false, num_frame_per_block 3); causvid/models/wan/causal_inference.py (32760-token cache)",
        cache="global cache of 21 latent frames, no sink",
    ),
    Family(
        "longlive", chunk_frames=3, sink_frames=3, window_frames=6, student_timesteps=(1000, 750, 500, 250), shift=5.0,
        source="NVlabs/LongLive@2462895 (before LongLive 2.0) configs/longlive_inference.yaml (local_attn_size 12, sink_size 3, "
               "timestep_shift 5, LoRA rank 256 / alpha 256); wan/modules/causal_model.py (12 frames attended incl. the chunk)",
        cache="sink 3 + rolling window, 12 frames attended; KV re-cache on prompt switch",
    ),
    Family(
        "rolling-forcing", chunk_frames=3, sink_frames=3, window_frames=15, student_timesteps=(1000, 800, 600, 400, 200),
        shift=5.0,
        source="TencentARC/RollingForcing@a1477d0 configs/rolling_forcing_dmd.yaml (5 warped steps, shift 5); "
               "wan/modules/causal_model.py (first block kept as sink, 21 frames attended); pipeline/rolling_forcing_inference.py",
        cache="sink of one chunk + rolling window, 21 frames attended; joint denoising of 5 chunks",
    ),
    Family(
        "reward-forcing", chunk_frames=3, sink_frames=3, window_frames=3, student_timesteps=(1000, 750, 500, 250), shift=5.0,
        source="JaydenLyh/Reward-Forcing@4317f5a configs/reward_forcing.yaml (local_attn_size 9, sink_size 3, shift 5); "
               "wan/modules/causal_model.py (EMA sink, compression_alpha 0.999)",
        cache="EMA sink 3 + rolling window, 9 frames attended",
    ),
)}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise KeyError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def apply_family(cfg: ModelConfig, name: str) -> ModelConfig:
    """`cfg` with the family's chunking, cache sizes and student timesteps (everything else kept)."""
    f = family(name)
    stream: StreamConfig = dataclasses.replace(
        cfg.stream, chunk_frames=f.chunk_frames, sink_frames=f.sink_frames, window_frames=f.window_frames)
    schedule: ScheduleConfig = dataclasses.replace(cfg.schedule, student_timesteps=f.student_timesteps, shift=f.shift)
    return dataclasses.replace(cfg, family=f.name, stream=stream, schedule=schedule).validate()
