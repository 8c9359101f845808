"""The causal Wan2.1 DiT: one set of weights, three attention modes.

Read top to bottom: embeddings -> blocks (self-attention, text cross-attention, FFN, each with
adaLN modulation) -> output head -> the three forward modes:

- `forward(x, t, text)`: bidirectional over the whole clip (teacher, critic). Equals diffusers'
  `WanTransformer3DModel` for the same weights; module names match its state dict.
- `forward(x, t, text, chunk_frames=c)`: block-causal over the whole clip (a frame sees its own
  chunk and earlier chunks): training of the causal student.
- `forward_stream(x_chunk, t, text_kv, cache, plan, write)`: one chunk against the rolling KV
  cache (student inference and Self-Forcing rollouts).

Avatar models (`audio_dim > 0`) add an audio adapter: `audio_proj` turns each latent frame's window of
audio features [M, A] into K tokens, and every block reads its own frame's tokens through an extra
cross-attention after the text one (per frame, so it is causal per chunk in every mode). Every mode
takes `audio` [B, F, M, A] (None: the audio layers are skipped, the unconditional branch); a model
without audio layers has exactly the Wan2.1 state dict.

Timesteps are `[B]` or per frame `[B, F]`; modulation is applied per frame.
Shapes: B batch, C latent channels, F latent frames, h x w latent size, L = F * (h/ph) * (w/pw)
tokens, H heads, D head dim, E = H * D model width.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels
from models.config import AUDIO_KEYS, ScheduleConfig, TransformerConfig
from models.kv_cache import CachePlan, RollingKVCache
from models.latent_refiner import LatentRefiner
from kernels.masks import block_causal_block_list
from models.rope import RotaryEmbedding3D, apply_rotary

WAN_TRAIN_TIMESTEPS = ScheduleConfig.num_train_timesteps  # timestep = sigma * 1000, as in every Wan model
PREDICTIONS = ("flow", "x0", "preconditioned")  # TransformerConfig.prediction: what the head draws
# "x0": the flow divides by sigma floored here (Li & He 2025 clip t at 0.05), so a clean frame (sigma 0: a start
# image, a committed chunk) gets a finite flow and the v-loss's weight on x0's error, 1 / sigma^2, stays under 400.
# Below the floor the head's output is x_t - 0.05 v rather than x0, which the same v-loss trains, so the flow every
# caller receives means the same thing at every sigma
X0_MIN_SIGMA = 0.05


def flow_from_head(head: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, prediction: str) -> torch.Tensor:
    """The flow v = eps - x0 from what the head drew. head, x_t [B, C, F, H, W]; t [B, F] timesteps.

    "x0": head = x0_hat, v = (x_t - x0_hat) / max(sigma, X0_MIN_SIGMA).
    "preconditioned" (Karras et al. 2022, eq. 7, for x_t = a x0 + sigma eps, a = 1 - sigma, unit-variance data):
    x0_hat = c_skip x_t + c_out head, c_skip = a / d^2, c_out = sigma / d, d^2 = a^2 + sigma^2 (the variance of x_t),
    so v = (x_t - x0_hat) / sigma = (sigma - a) / d^2 x_t - head / d: finite at every sigma, sigma 0 included.
    """
    sigma = (t.float() / WAN_TRAIN_TIMESTEPS)[:, None, :, None, None]  # [B, 1, F, 1, 1]
    x, h = x_t.float(), head.float()
    if prediction == "x0":
        return ((x - h) / sigma.clamp_min(X0_MIN_SIGMA)).to(head.dtype)
    a = 1.0 - sigma
    d2 = a * a + sigma * sigma
    return ((sigma - a) / d2 * x - h / d2.sqrt()).to(head.dtype)


# ------------------------------------------------------------------------------------- layers
class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the input dtype (as Wan does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


def timestep_sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding [..., dim] of timesteps t [...] (cos first, as diffusers' flip_sin_to_cos)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float().unsqueeze(-1) * freqs  # [..., half]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TwoLayerMLP(nn.Module):
    """linear_1 -> activation -> linear_2 (the time and text embedders; diffusers' key names)."""

    def __init__(self, in_dim: int, dim: int, activation: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.activation(self.linear_1(x)))


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


class ConditionEmbedder(nn.Module):
    """Timestep -> (temb [.., E], 6-way modulation [.., 6, E]); text states -> [B, Lt, E]."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.freq_dim = cfg.freq_dim
        self.time_embedder = TwoLayerMLP(cfg.freq_dim, cfg.dim, F.silu)
        self.time_proj = nn.Linear(cfg.dim, 6 * cfg.dim)
        self.text_embedder = TwoLayerMLP(cfg.text_dim, cfg.dim, gelu_tanh)

    def time(self, t: torch.Tensor, extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        # t: [B, F] -> temb [B, F, E], mod [B, F, 6, E] (fp32); extra [B, F, E] is added to temb first
        temb = self.time_embedder(timestep_sinusoid(t, self.freq_dim).to(self.time_embedder.linear_1.weight.dtype))
        if extra is not None:
            temb = temb + extra.to(temb.dtype)
        mod = self.time_proj(F.silu(temb)).unflatten(-1, (6, -1))
        return temb.float(), mod.float()


class GELUProjection(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.net = nn.ModuleList([GELUProjection(dim, inner), nn.Dropout(0.0), nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


# "attend" callables receive q, k, v [B, L, H, D] (q/k normed, not rotated) and return [B, L, H, D]
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Attention(nn.Module):
    """Projections + RMS qk-norm across heads; how keys are assembled is the caller's `attend`."""

    def __init__(self, dim: int, heads: int, eps: float):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])
        self.norm_q = nn.RMSNorm(dim, eps=eps, elementwise_affine=True)
        self.norm_k = nn.RMSNorm(dim, eps=eps, elementwise_affine=True)

    def kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.norm_k(self.to_k(context)).unflatten(-1, (self.heads, -1))  # [B, Lk, H, D]
        v = self.to_v(context).unflatten(-1, (self.heads, -1))  # [B, Lk, H, D]
        return k, v

    def forward(self, x: torch.Tensor, attend: Attend, kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x [B, L, E]; kv: precomputed (k, v) [B, Lk, H, D] (cross-attention), else from x."""
        q = self.norm_q(self.to_q(x)).unflatten(-1, (self.heads, -1))  # [B, L, H, D]
        k, v = self.kv(x) if kv is None else kv
        out = attend(q, k.to(q.dtype), v.to(q.dtype)).flatten(2)  # [B, L, E]
        return self.to_out[0](out)


def dense_attend(mask: torch.Tensor | None = None, backend: str | None = None,
                 block_list: kernels.BlockList | None = None) -> Attend:
    def attend(q, k, v):
        out = kernels.attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask, block_list,
                                backend=backend)  # [B, H, L, D]
        return out.transpose(1, 2)

    return attend


def _per_frame(attend: Attend, frames: int) -> Attend:
    """`attend` run per latent frame: q [B, F*T, H, D] against k, v [B, F*K, H, D] (T query and K context
    tokens per frame), as one call batched over B*F, so a frame sees only its own context."""
    def run(q, k, v):
        b, lq, h, d = q.shape
        out = attend(q.reshape(b * frames, lq // frames, h, d), k.reshape(b * frames, -1, h, d),
                     v.reshape(b * frames, -1, h, d))  # [B*F, T, H, D]
        return out.reshape(b, lq, h, d)

    return run


class AudioProjection(nn.Module):
    """Audio adapter input (MultiTalk / OmniAvatar style): per latent frame, the window of M video
    frames' features [M, A] -> K tokens [K, E]."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.tokens = cfg.audio_tokens
        self.linear_1 = nn.Linear(cfg.audio_window * cfg.audio_dim, cfg.dim)
        self.linear_2 = nn.Linear(cfg.dim, cfg.audio_tokens * cfg.dim)
        self.norm = FP32LayerNorm(cfg.dim, cfg.eps, elementwise_affine=True)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        # audio [B, F, M, A] -> tokens [B, F, K, E]
        h = self.linear_2(F.silu(self.linear_1(audio.flatten(2).to(self.linear_1.weight.dtype))))  # [B, F, K*E]
        return self.norm(h.unflatten(-1, (self.tokens, -1)))


class TransformerBlock(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        dim = cfg.dim
        self.norm1 = FP32LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.attn1 = Attention(dim, cfg.num_attention_heads, cfg.eps)
        self.attn2 = Attention(dim, cfg.num_attention_heads, cfg.eps)
        self.norm2 = FP32LayerNorm(dim, cfg.eps, elementwise_affine=True) if cfg.cross_attn_norm else nn.Identity()
        self.ffn = FeedForward(dim, cfg.ffn_dim)
        self.norm3 = FP32LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.scale_shift_table = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)
        if cfg.has_audio:  # the audio adapter's cross-attention (absent from plain Wan blocks)
            self.norm_audio = FP32LayerNorm(dim, cfg.eps, elementwise_affine=True)
            self.attn_audio = Attention(dim, cfg.num_attention_heads, cfg.eps)

    def cross_kv(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention K/V [B, Lt, H, D] of projected text [B, Lt, E] (a method of the block, so
        FSDP2 gathers the block's parameters when it is called on its own)."""
        return self.attn2.kv(text)

    def forward(self, x: torch.Tensor, mod: torch.Tensor, self_attend: Attend,
                text: tuple[torch.Tensor, torch.Tensor] | torch.Tensor, cross_attend: Attend,
                audio: torch.Tensor | None = None) -> torch.Tensor:
        # x: [B, F, T, E] (frames x tokens per frame); mod: [B, F, 6, E] fp32; audio: tokens [B, F, K, E] or None
        # text: cached cross-attention (k, v) [B, Lt, H, D], or projected text [B, Lt, E] whose K/V are computed here
        # (attn2.kv, not cross_kv: under FSDP2 a registered forward method called here would reshard on return)
        text_kv = self.attn2.kv(text) if isinstance(text, torch.Tensor) else text
        b, f, t, e = x.shape
        shift, scale, gate, c_shift, c_scale, c_gate = (self.scale_shift_table + mod).unsqueeze(3).unbind(2)  # [B,F,1,E]
        h = (self.norm1(x.float()) * (1 + scale) + shift).type_as(x)
        h = self.attn1(h.view(b, f * t, e), self_attend).view(b, f, t, e)
        x = (x.float() + h * gate).type_as(x)
        h = self.norm2(x.float()).type_as(x)
        x = x + self.attn2(h.view(b, f * t, e), cross_attend, kv=text_kv).view(b, f, t, e)
        if audio is not None:  # each frame's tokens read that frame's audio tokens only
            h = self.norm_audio(x.float()).type_as(x)
            x = x + self.attn_audio(h.view(b, f * t, e), _per_frame(cross_attend, f),
                                    kv=self.attn_audio.kv(audio.flatten(1, 2))).view(b, f, t, e)
        h = (self.norm3(x.float()) * (1 + c_scale) + c_shift).type_as(x)
        x = (x.float() + self.ffn(h).float() * c_gate).type_as(x)
        return x


def first_frame_marks(video_start: torch.Tensor | bool, b: int, f: int, device) -> torch.Tensor | None:
    """[B, F] bool marking frame 0 of the rows whose clip starts its video (`video_start` [B] or one bool)."""
    if video_start is False:
        return None
    rows = torch.as_tensor(video_start, dtype=torch.bool, device=device).expand(b)  # [B]
    marks = torch.zeros(b, f, dtype=torch.bool, device=device)
    marks[:, 0] = rows
    return marks


# ------------------------------------------------------------------------------------- model
class CausalWanTransformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.config = cfg
        self.rope = RotaryEmbedding3D(cfg.attention_head_dim)
        self.patch_embedding = nn.Conv3d(cfg.in_channels, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.condition_embedder = ConditionEmbedder(cfg)
        self.blocks = nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg.num_layers)])
        self.norm_out = FP32LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.proj_out = nn.Linear(cfg.dim, cfg.out_channels * math.prod(cfg.patch_size))
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)
        if cfg.has_audio:
            self.audio_proj = AudioProjection(cfg)
        if cfg.video_start:  # zero: a model that gains it computes what it did (distill/grow.py)
            self.video_start_embedding = nn.Parameter(torch.zeros(cfg.dim))
        if cfg.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {cfg.prediction!r}")
        if cfg.prediction != "flow" and (cfg.noise_skip or cfg.in_channels != cfg.out_channels):
            raise ValueError(f"prediction {cfg.prediction!r} needs in_channels == out_channels and no noise_skip "
                             "(the flow is computed from x_t and the head)")
        if cfg.noise_skip:
            if cfg.in_channels != cfg.out_channels:
                raise ValueError("noise_skip needs in_channels == out_channels (it adds a scaled x_t to the output)")
            self.noise_skip = nn.Linear(cfg.dim, cfg.out_channels)  # time embedding -> per-channel scale of x_t
            nn.init.zeros_(self.noise_skip.weight)  # zero: a model that gains it computes what it did
            nn.init.zeros_(self.noise_skip.bias)
        if cfg.refine_channels:
            if cfg.prediction != "flow" or cfg.patch_size[0] != 1 or cfg.in_channels != cfg.out_channels:
                raise ValueError("refine_channels needs prediction 'flow', temporal patch 1 and in_channels == "
                                 "out_channels (it refines each latent frame's flow beside that frame's x_t)")
            self.refiner = LatentRefiner(cfg.out_channels, cfg.refine_channels, cfg.dim)
        self.gradient_checkpointing = False
        self.attn_backend: str | None = None  # attention backend of every call (None: $FRAMECAST_ATTN, else auto)

    # ---- pieces shared by every mode
    def _patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        # x: [B, C, F, H, W] -> tokens [B, F', T, E] and grid (F', h', w')
        h = self.patch_embedding(x.to(self.patch_embedding.weight.dtype))  # [B, E, F', h', w']
        b, e, f, hh, ww = h.shape
        return h.flatten(3).permute(0, 2, 3, 1), (f, hh, ww)

    def _frame_timesteps(self, t: torch.Tensor, b: int, f: int) -> torch.Tensor:
        """Timesteps t ([], [B] or [B, F]) -> [B, F] on the model's device."""
        t = t.to(self.patch_embedding.weight.device)
        t = t.expand(b) if t.ndim == 0 else t
        return t[:, None].expand(b, f) if t.ndim == 1 else t

    def _timesteps(self, t: torch.Tensor, b: int, f: int, start: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(temb [B, F, E], mod [B, F, 6, E]) of timesteps t ([], [B] or [B, F]). The frames `start` [B, F] (bool)
        marks as a video's first latent frame have the video-start embedding added to their time embedding (config
        `video_start`), so every block's modulation and the output head know them."""
        t = self._frame_timesteps(t, b, f)  # [B, F]
        extra = None
        if start is not None and self.config.video_start:
            extra = start.to(t.device, torch.float32)[:, :, None] * self.video_start_embedding.float()  # [B, F, E]
        return self.condition_embedder.time(t, extra)

    def _head(self, x: torch.Tensor, temb: torch.Tensor, grid: tuple[int, int, int], x_t: torch.Tensor,
              t: torch.Tensor) -> torch.Tensor:
        # x: [B, F, T, E] tokens, x_t [B, C, F*pt, H, W] the model's input, t [B, F] its timesteps
        # -> flow prediction [B, C, F*pt, h'*ph, w'*pw]
        out = self._project_out(x, temb, grid)
        if self.config.prediction != "flow":
            return flow_from_head(out, x_t, t.repeat_interleave(self.config.patch_size[0], dim=1), self.config.prediction)
        if self.config.noise_skip:  # + s(t) * x_t, s [B, C, F, 1, 1] per frame (config `noise_skip`)
            scale = self.noise_skip(temb.to(self.noise_skip.weight.dtype)).permute(0, 2, 1)  # [B, C, F]
            scale = scale.repeat_interleave(self.config.patch_size[0], dim=2)[..., None, None]  # [B, C, F*pt, 1, 1]
            out = out + (scale * x_t.to(scale.dtype)).to(out.dtype)
        if self.config.refine_channels:  # per-frame convolutions at full latent resolution (config `refine_channels`)
            out = self.refiner(out, x_t, temb)
        return out

    def _project_out(self, x: torch.Tensor, temb: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        # x: [B, F, T, E] -> prediction [B, C, F*pt, h'*ph, w'*pw]
        shift, scale = (self.scale_shift_table[:, None] + temb[:, :, None]).unsqueeze(3).unbind(2)  # [B, F, 1, E]
        x = (self.norm_out(x.float()) * (1 + scale) + shift).type_as(x)
        x = self.proj_out(x)  # [B, F, T, C*pt*ph*pw]
        f, hh, ww = grid
        pt, ph, pw = self.config.patch_size
        x = x.reshape(x.shape[0], f, hh, ww, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)

    def _audio_tokens(self, audio: torch.Tensor | None, b: int, f: int) -> torch.Tensor | None:
        """Audio window features [B, F, M, A] -> tokens [B, F, K, E] (None stays None: no audio)."""
        if audio is None:
            return None
        if not self.config.has_audio:
            raise ValueError("this transformer has no audio layers (audio_dim = 0) but was given audio")
        want = (b, f, self.config.audio_window, self.config.audio_dim)
        if tuple(audio.shape) != want:
            raise ValueError(f"audio must be [B, F, M, A] = {list(want)}, got {list(audio.shape)}")
        return self.audio_proj(audio.to(self.patch_embedding.weight.device))

    def _run_blocks(self, x, mod, self_attend_for: Callable[[int], Attend], text, audio: torch.Tensor | None = None):
        """text: per-layer cached (k, v), or projected text [B, Lt, E] (each block computes its own K/V);
        audio: tokens [B, F, K, E] or None."""
        for i, block in enumerate(self.blocks):
            args = (x, mod, self_attend_for(i), text if isinstance(text, torch.Tensor) else text[i],
                    dense_attend(backend=self.attn_backend), audio)
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
            else:
                x = block(*args)
        return x

    def embed_text(self, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        """Text states [B, Lt, text_dim] -> projected [B, Lt, E]."""
        w = self.condition_embedder.text_embedder.linear_1.weight
        return self.condition_embedder.text_embedder(encoder_hidden_states.to(w.device, w.dtype))

    def text_kv(self, encoder_hidden_states: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Cross-attention K/V per layer, computed once per prompt: [(k, v) [B, Lt, H, D]] * layers."""
        text = self.embed_text(encoder_hidden_states)
        return [block.cross_kv(text) for block in self.blocks]

    # ---- mode 1 and 2: whole clip
    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                chunk_frames: int | None = None, audio: torch.Tensor | None = None, lead_frames: int = 0,
                video_start: torch.Tensor | bool = False) -> torch.Tensor:
        """Bidirectional (chunk_frames=None) or block-causal forward over a whole clip.

        hidden_states [B, C, F, H, W]; timestep [B] or [B, F]; encoder_hidden_states [B, Lt, text_dim];
        audio [B, F, M, A] window features per latent frame (avatar models; None = no audio).
        lead_frames (block-causal): the first frames form a chunk of their own (a start image committed
        before the first chunk, as streaming does). video_start: [B] bool (or one bool for every row): the
        clip's frame 0 is its video's first latent frame (config `video_start`). Returns the flow prediction
        [B, C, F, H, W].
        """
        x, grid = self._patchify(hidden_states)
        b, f, t, _ = x.shape
        start = first_frame_marks(video_start, b, f, x.device) if self.config.video_start else None
        t_frames = self._frame_timesteps(timestep, b, f)  # [B, F]
        temb, mod = self._timesteps(t_frames, b, f, start)
        pos = torch.arange(f, device=x.device).expand(b, f)
        cos, sin = self.rope.cos_sin(pos, grid[1], grid[2])
        # block-causal: a BlockList (built once per shape) so sparse backends skip the masked tiles
        block_list = None if chunk_frames is None else block_causal_block_list(f, t, chunk_frames, x.device, lead_frames=lead_frames)

        def self_attend_for(_layer: int) -> Attend:
            inner = dense_attend(None, self.attn_backend, block_list)
            return lambda q, k, v: inner(apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v)

        x = self._run_blocks(x, mod, self_attend_for, self.embed_text(encoder_hidden_states),
                             self._audio_tokens(audio, b, f))
        return self._head(x, temb, grid, hidden_states, t_frames)

    # ---- mode 3: one chunk against the rolling cache
    def forward_stream(self, x: torch.Tensor, timestep: torch.Tensor,
                       text_kv: list[tuple[torch.Tensor, torch.Tensor]] | torch.Tensor,
                       cache: RollingKVCache, plan: CachePlan, write: bool = False, attn: str | None = None,
                       audio: torch.Tensor | None = None) -> torch.Tensor:
        """Denoise (or, with write=True, commit) one chunk of each planned row.

        x [B, C, c, H, W]; timestep [B] or [B, c]; text_kv from `text_kv()` for these rows, or the
        text states [B, Lt, text_dim] themselves (training: the K/V are then computed inside each
        block's forward, with gradients, and with the block's parameters gathered under FSDP2).
        The chunk attends to the valid cache slots (sink + window) and to itself. With write=True
        the chunk's K/V are stored in their ring slots after each layer has used the old ones.
        attn: attention backend for this call (default `self.attn_backend`, then $FRAMECAST_ATTN,
        then auto); `fused` reads the ring in place with RoPE on load (kernels/stream_kernel.py).
        audio: the chunk's window features [B, c, M, A] (avatar models; None = no audio).
        The frames `plan.video_start` marks get the video-start embedding (config `video_start`).
        Returns the flow prediction [B, C, c, H, W].
        """
        xt, grid = self._patchify(x)
        b, f, t, _ = xt.shape
        t_frames = self._frame_timesteps(timestep, b, f)  # [B, F]
        temb, mod = self._timesteps(t_frames, b, f, plan.video_start)
        # RoPE at window-relative positions, factored: cache slots then chunk frames x in-frame tokens
        frame_cos, frame_sin = self.rope.frame_tables(torch.cat([plan.key_positions, plan.query_positions], 1))
        grid_cos, grid_sin = self.rope.grid_tables(grid[1], grid[2])  # [T, Ps]
        rope = kernels.StreamRope(frame_cos, frame_sin, grid_cos, grid_sin)  # frame tables [B, S+c, Pt]
        backend = attn if attn is not None else self.attn_backend

        recompute = self.gradient_checkpointing and torch.is_grad_enabled()

        def self_attend_for(layer: int) -> Attend:
            held = None
            if recompute:  # read now: a checkpointed block re-runs in backward, after later chunks overwrote the ring
                held = tuple(t.clone() for t in cache.ring(layer))

            def attend(q, k, v):
                k_ring, v_ring = held if held is not None else cache.ring(layer)  # [Bmax, S*T, H, D] (un-rotated, in place)
                call = kernels.StreamCall(q, k, v, k_ring, v_ring, plan.rows, plan.key_valid, rope, plan.contiguous,
                                          plan.key_local, cache.local_radius if plan.key_local is not None else 0, grid[2])
                out = kernels.stream_attention(call, backend)  # [B, c*T, H, D]
                if write:
                    cache.write(layer, plan, k, v)
                return out

            return attend

        text = self.embed_text(text_kv) if isinstance(text_kv, torch.Tensor) else text_kv
        xt = self._run_blocks(xt, mod, self_attend_for, text, self._audio_tokens(audio, b, f))
        return self._head(xt, temb, grid, x, t_frames)

    # ---- weights
    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device | None = None,
                        checkpoint: str | Path | None = None, lora=(), audio_adapter: str | Path | None = None
                        ) -> "CausalWanTransformer":
        """Load a diffusers `WanTransformer3DModel` folder or an original Wan2.1 release folder
        (`WanModel` config.json + Wan-named safetensors, sharded or not); see models/wan_weights.py.

        checkpoint: a student's training checkpoint loaded over those weights (every tensor replaced;
        missing or unexpected keys are an error). lora: `LoraSpec`s (or "FILE[:SCALE]" strings)
        merged into the weights, in order. audio_adapter: a folder written by `save_audio_adapter`
        (its config.json sizes the audio layers, its safetensors hold exactly their weights) added to
        a plain Wan transformer: how a Wan-scale avatar model ships its adapter over the base weights.
        """
        from models.lora import LoraSpec, merge_lora, read_lora
        from models.wan_weights import check_state, read_checkpoint, read_transformer_folder

        cfg, state = read_transformer_folder(path)
        if audio_adapter is not None:
            cfg, state = _with_audio_adapter(cfg, state, Path(audio_adapter))
        with torch.device("meta"):
            model = cls(cfg)
        expected = {k: v.shape for k, v in model.state_dict().items()}
        check_state(expected, state, str(path))
        if checkpoint is not None:
            state = read_checkpoint(checkpoint)
            check_state(expected, state, str(checkpoint))
        for spec in lora:
            spec = spec if isinstance(spec, LoraSpec) else LoraSpec.parse(str(spec))
            merge_lora(state, read_lora(spec.path), spec.scale, source=str(spec.path))
        state = {k: v.to(device or "cpu") for k, v in state.items()}
        model.load_state_dict(state, strict=True, assign=True)
        model.rope = RotaryEmbedding3D(cfg.attention_head_dim).to(device or "cpu")
        return model.to(dtype=dtype) if dtype is not None else model

    def audio_state_dict(self) -> dict[str, torch.Tensor]:
        """The audio adapter's weights (audio_proj and every block's norm_audio / attn_audio)."""
        return {k: v for k, v in self.state_dict().items() if _is_audio_key(k)}

    def save_audio_adapter(self, path: str | Path) -> None:
        """Write the audio adapter alone: config.json (audio_dim, audio_window, audio_tokens) + safetensors."""
        from safetensors.torch import save_file

        if not self.config.has_audio:
            raise ValueError("this transformer has no audio adapter")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        sizes = {k: getattr(self.config, k) for k in AUDIO_KEYS}
        (path / "config.json").write_text(json.dumps(sizes, indent=2) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in self.audio_state_dict().items()}
        save_file(state, str(path / ADAPTER_WEIGHTS))

    def init_audio_adapter_as_identity(self) -> None:
        """Zero the audio cross-attention outputs, so a pretrained model with a fresh adapter computes
        exactly what it did without one (where adapter training starts, as for Wan-scale avatars)."""
        for block in self.blocks:
            nn.init.zeros_(block.attn_audio.to_out[0].weight)
            nn.init.zeros_(block.attn_audio.to_out[0].bias)

    def save_pretrained(self, path: str | Path) -> None:
        """Write a diffusers-compatible folder (config.json + diffusion_pytorch_model.safetensors)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        cfg = {"_class_name": "WanTransformer3DModel", "_diffusers_version": "0.42.1", **self.config.to_diffusers()}
        (path / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(path / "diffusion_pytorch_model.safetensors"))



ADAPTER_WEIGHTS = "audio_adapter.safetensors"


def _is_audio_key(key: str) -> bool:
    return key.startswith("audio_proj.") or ".attn_audio." in key or ".norm_audio." in key


def _with_audio_adapter(cfg: TransformerConfig, state: dict[str, torch.Tensor], folder: Path):
    """(cfg, state) of a plain transformer plus the audio adapter saved in `folder`."""
    import dataclasses

    from safetensors.torch import load_file

    if cfg.has_audio:
        raise ValueError(f"the transformer already has audio layers; {folder} would replace them")
    sizes = json.loads((folder / "config.json").read_text())
    cfg = dataclasses.replace(cfg, **{k: int(sizes[k]) for k in AUDIO_KEYS})
    adapter = load_file(str(folder / ADAPTER_WEIGHTS))
    stray = [k for k in adapter if not _is_audio_key(k)]
    if stray:
        raise ValueError(f"{folder}: the audio adapter holds non-adapter weights: {stray[:3]}")
    return cfg, {**state, **adapter}
