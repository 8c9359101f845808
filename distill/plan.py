"""`framecast distill plan --config X --gpus N --gpu-mem 80`: memory per GPU of each stage, from the
config alone (no weights are loaded, nothing runs).

Per stage and role: parameters, the bytes each GPU holds for them under FSDP2 (fp32 master weights,
gradients and AdamW moments of trained roles, EMA, the frozen real score; sharded over the GPUs),
activations saved for backward with and without block-level activation checkpointing, the rolling
KV cache of Self-Forcing rollouts, the text encoder, and whether the total fits in `gpu_mem`.

Activation model (bytes saved per token per transformer block, E model width, Fd FFN width, b
bytes of the compute dtype), counted from the tensors `TransformerBlock.forward` keeps for
backward: five fp32 copies around the three LayerNorms and the FFN gate (20 E), the projections'
inputs and outputs of self- and cross-attention, the modulated inputs (17 b E), the FFN's hidden
pre- and post-activation (2 b Fd); plus, where the attention scores are materialised (the CPU
path), b x heads x keys. With checkpointing a block keeps only its input (b E) and one block's full
activations live during its recompute. A streamed chunk also keeps the keys and values it attended
to (2 b E per cached token per block). `tests/distill/test_plan.py` checks the estimate against a
peak measured by torch's `MemTracker` on the tiny recipe.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from distill.config import DistillConfig
from models.config import ModelConfig, TransformerConfig

GIB = 1024**3
# parameters of the text encoders (encoder only), a property of the released models
TEXT_ENCODER_PARAMS = {"umt5": 5_680_000_000, "minilm": 22_700_000, "hash": 0}


def transformer_params(tcfg: TransformerConfig) -> tuple[int, int]:
    """(total parameters, parameters of one block), counted on the meta device."""
    from models.transformer import CausalWanTransformer

    with torch.device("meta"):
        model = CausalWanTransformer(tcfg)
    total = sum(p.numel() for p in model.parameters())
    block = sum(p.numel() for p in model.blocks[0].parameters())
    return total, block


def block_activation_bytes(tcfg: TransformerConfig, tokens: int, keys: int, text_tokens: int, b: int,
                           scores: bool) -> int:
    """Bytes one block saves for backward over `tokens` query tokens (module docstring)."""
    e, fd, h = tcfg.dim, tcfg.ffn_dim, tcfg.num_attention_heads
    per_token = 20 * e + 17 * b * e + 2 * b * fd
    if scores:
        per_token += b * h * (keys + text_tokens)
    return tokens * per_token


@dataclass
class RoleMemory:
    role: str
    params: int
    trained: bool
    state_bytes: int  # per GPU: weights (+ grads, AdamW moments, EMA when trained)


@dataclass
class StagePlan:
    stage: str
    roles: list[RoleMemory]
    activations: int  # per GPU, without checkpointing
    activations_ckpt: int  # per GPU, with block checkpointing
    other: int  # KV cache, text encoder, batch data
    notes: list[str] = field(default_factory=list)

    def total(self, checkpointing: bool) -> int:
        return sum(r.state_bytes for r in self.roles) + self.other + (
            self.activations_ckpt if checkpointing else self.activations)


def _role(name: str, params: int, trained: bool, gpus: int, ema: bool = False, offload: bool = False) -> RoleMemory:
    if trained:  # fp32 master weights + fp32 grads + AdamW exp_avg / exp_avg_sq (+ fp32 EMA shadow)
        per_param = 4 + 4 + 8 + (4 if ema else 0)
    else:
        per_param = 0 if offload else 4  # frozen: fp32 weights (in host memory when offloaded)
    return RoleMemory(name, params, trained, params * per_param // gpus)


def _real_score_config(cfg: DistillConfig, model_cfg: ModelConfig) -> TransformerConfig:
    """The real score's architecture: its folder's config.json, or a preset name, else the teacher's."""
    source = cfg.self_forcing.real_score
    if not source:
        return model_cfg.transformer
    path = Path(source)
    if (path / "config.json").exists():
        return TransformerConfig.from_dict(json.loads((path / "config.json").read_text()))
    from models.config import preset

    return preset(source).transformer


def plan(cfg: DistillConfig, gpus: int, model_cfg: ModelConfig | None = None, compute_bytes: int | None = None,
         scores: bool = False) -> list[StagePlan]:
    """Per-GPU memory of the ode-pairs, ode-init and self-forcing stages on `gpus` GPUs.

    compute_bytes: bytes of the compute dtype (default: `cfg.parallel.param_dtype`'s); scores: count
    materialised attention scores (the CPU path; fused GPU kernels keep none).
    """
    if model_cfg is None:
        # planning away from the weights: the preset's shapes
        model_cfg = dataclasses.replace(cfg, model_dir=None).model_config() if cfg.model_dir and not Path(
            cfg.model_dir).exists() else cfg.model_config()
    tcfg = model_cfg.transformer
    b = compute_bytes or torch.empty((), dtype=getattr(torch, cfg.parallel.param_dtype)).element_size()
    p_student, p_block = transformer_params(tcfg)
    real_cfg = _real_score_config(cfg, model_cfg)
    p_real, _ = transformer_params(real_cfg)
    t_frame = model_cfg.latent_height * model_cfg.latent_width // (tcfg.patch_size[1] * tcfg.patch_size[2])
    lt = model_cfg.text_encoder.max_length
    text_dim = tcfg.text_dim
    c = tcfg.in_channels
    kind = "umt5" if cfg.model_dir else model_cfg.text_encoder.kind  # a Wan folder brings its umT5 (as the pipeline loads it)
    text_bytes = 0 if cfg.parallel.text_encoder_device == "cpu" else TEXT_ENCODER_PARAMS.get(kind, 0) * 2
    layers = tcfg.num_layers
    gathered = 2 * p_block * b if gpus > 1 else 0  # FSDP2: the block being computed and the one prefetched, unsharded
    offload = cfg.parallel.offload_frozen
    plans = []

    # ode-pairs: inference only, a full teacher per GPU, one no-grad block alive at a time
    pc = cfg.ode_pairs
    tokens = 2 * pc.batch_size * pc.frames * t_frame  # cond + uncond
    latents = pc.batch_size * c * pc.frames * model_cfg.latent_height * model_cfg.latent_width * 4
    k = len(model_cfg.schedule.student_timesteps)
    plans.append(StagePlan(
        "ode-pairs", [RoleMemory("teacher", p_student, False, p_student * 4)],
        activations=block_activation_bytes(tcfg, tokens, tokens // (2 * pc.batch_size), lt, b, scores) // 2,
        activations_ckpt=block_activation_bytes(tcfg, tokens, tokens // (2 * pc.batch_size), lt, b, scores) // 2,
        other=text_bytes + latents * (k + 3),
        notes=["inference: every GPU holds the whole teacher and samples its own batches"]))

    # ode-init: the student, block-causal over the clip
    oc = cfg.ode_init
    tokens = oc.batch_size * pc.frames * t_frame
    keys = pc.frames * t_frame
    act = layers * block_activation_bytes(tcfg, tokens, keys, lt, b, scores)
    ckpt = layers * tokens * tcfg.dim * b + block_activation_bytes(tcfg, tokens, keys, lt, b, scores)
    mask = keys * keys  # the block-causal mask (bool)
    data = oc.batch_size * ((k + 2) * c * pc.frames * model_cfg.latent_height * model_cfg.latent_width * 4 + lt * text_dim * 4)
    plans.append(StagePlan(
        "ode-init", [_role("student", p_student, True, gpus, ema=oc.ema_decay > 0)],
        activations=act, activations_ckpt=ckpt, other=mask + data + gathered + text_bytes * 0,
        notes=["ODE pairs are read lazily from shards: host memory does not grow with their number"]))

    # self-forcing: student rollouts through the KV cache, then the real score and the critic on windows
    sc = cfg.self_forcing
    st = model_cfg.stream
    chunk_tokens = sc.batch_size * st.chunk_frames * t_frame
    cache_frames = st.sink_frames + st.window_frames
    keys = (cache_frames + st.chunk_frames) * t_frame
    per_chunk = layers * (block_activation_bytes(tcfg, chunk_tokens, keys, lt, b, scores)
                          + 2 * sc.batch_size * keys * tcfg.dim * b)
    per_chunk_ckpt = layers * (chunk_tokens * tcfg.dim * b + 2 * sc.batch_size * cache_frames * t_frame * tcfg.dim * b)
    one_block_chunk = block_activation_bytes(tcfg, chunk_tokens, keys, lt, b, scores)
    cache = 2 * layers * sc.batch_size * cache_frames * t_frame * tcfg.dim * b
    windows = len(range(0, max(1, sc.rollout_chunks * st.chunk_frames - sc.score_frames + 1), sc.score_frames)) + 1
    window_tokens = sc.batch_size * windows * sc.score_frames * t_frame
    score_pass = block_activation_bytes(real_cfg, 2 * window_tokens, sc.score_frames * t_frame, lt, b, scores) // 2
    plans.append(StagePlan(
        "self-forcing",
        [_role("student", p_student, True, gpus, ema=sc.ema_decay > 0),
         _role("critic", p_student, True, gpus),
         _role("real score", p_real, False, gpus, offload=offload)],
        activations=sc.rollout_chunks * per_chunk + score_pass,
        activations_ckpt=sc.rollout_chunks * per_chunk_ckpt + one_block_chunk + score_pass,
        other=cache + gathered + text_bytes,
        notes=[f"rollout: {sc.rollout_chunks} chunks of {st.chunk_frames} frames, gradient through each chunk's exit step",
               "critic gradients are freed before the student update (only one trained role holds gradients)"]))
    # only one trained role holds gradients at a time: the critic's are freed before the student's update
    critic = plans[-1].roles[1]
    plans[-1].roles[1] = dataclasses.replace(critic, state_bytes=critic.state_bytes - critic.params * 4 // gpus)
    return plans


def format_plan(plans: list[StagePlan], gpus: int, gpu_mem_gib: float, checkpointing: bool) -> str:
    """The table `distill plan` prints."""
    lines = [f"per GPU, {gpus} GPU(s) of {gpu_mem_gib:g} GiB; FSDP2 shards trained and frozen roles over the GPUs",
             f"{'stage':<13} {'role':<11} {'params':>9} {'weights+optim':>14} {'act (no ckpt)':>14} "
             f"{'act (ckpt)':>11} {'other':>9} {'total':>9}  fits"]
    for p in plans:
        for i, r in enumerate(p.roles):
            lines.append(f"{p.stage if i == 0 else '':<13} {r.role:<11} {r.params / 1e9:>8.3f}B "
                         f"{r.state_bytes / GIB:>13.2f}G")
        total = p.total(checkpointing)
        fits = "yes" if total <= gpu_mem_gib * GIB else "NO"
        lines.append(f"{'':<13} {'(stage)':<11} {'':>9} {'':>14} {p.activations / GIB:>13.2f}G "
                     f"{p.activations_ckpt / GIB:>10.2f}G {p.other / GIB:>8.2f}G {total / GIB:>8.2f}G  {fits}")
        for note in p.notes:
            lines.append(f"{'':<13} - {note}")
    lines.append(f"total uses activations {'with' if checkpointing else 'without'} checkpointing "
                 f"(parallel.activation_checkpointing)")
    return "\n".join(lines)
