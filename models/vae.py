"""The video VAE: diffusers' `AutoencoderKLWan` behind a small wrapper, with streaming decode.

Wan's VAE is causal in time: every temporal convolution only looks back, keeping the last
`CACHE_T` (2) frames of its input in a feature cache. diffusers walks a latent video one latent
frame at a time through `decoder(x, feat_cache, feat_idx, first_chunk)`; the first latent frame
decodes to 1 video frame, every later one to `temporal_compression` frames. `StreamingDecoder`
owns such a cache, so a stream can decode chunk by chunk and get exactly the frames that decoding
the whole latent video gives. Each decoder has its own cache: several streams decode concurrently
with one set of weights. Nothing here mutates the diffusers module's own cache attributes, so
`encode`, `decode` and streaming decoders are safe to use from several threads.

Latents handed to and returned by this wrapper are normalised per channel:
`(z - latents_mean) / latents_std` (Wan's convention), which is what the transformer sees.
"""

from __future__ import annotations

import inspect
import types
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, patchify, unpatchify
from torch import nn

from models.config import VAEConfig

RELEASE_VAE_NAME = "Wan2.1_VAE.pth"  # the VAE file of the original Wan2.1 release


def _onednn_conv_forward(self: nn.Conv2d | nn.Conv3d, x: torch.Tensor, weight: torch.Tensor, bias):
    """`_conv_forward` that sends CPU fp32 convolutions to oneDNN.

    PyTorch's heuristic picks its unvectorised `slow_conv3d` whenever batch == 1 and
    B * C * T * H <= 20480, which is every conv of a small VAE decoding one stream (6-10x slower
    than oneDNN on the same shapes). oneDNN convolution is differentiable, so training is unaffected.
    """
    if (
        x.device.type == "cpu" and x.dtype == torch.float32 and not x.is_mkldnn
        and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
        and not isinstance(self.padding, str) and self.padding_mode == "zeros"
    ):
        return torch.mkldnn_convolution(x, weight, bias, self.padding, self.stride, self.dilation, self.groups)
    return type(self)._conv_forward(self, x, weight, bias)


def use_channels_last(module: nn.Module) -> None:
    """Store conv weights channels-last (NDHWC / NHWC), in place.

    With channels-last weights and inputs, oneDNN convolutions and the channel-wise RMS norms of
    a small VAE run about 1.5x faster on CPU. State dicts and checkpoints are unaffected.
    """
    for p in module.parameters():
        if p.dim() == 5:
            p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
        elif p.dim() == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)


def use_onednn_convs(module: nn.Module) -> None:
    """Route every Conv2d/Conv3d inside `module` through `_onednn_conv_forward` (per instance)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            m._conv_forward = types.MethodType(_onednn_conv_forward, m)


class VideoVAE(nn.Module):
    """Encode videos `[B, 3, T, H, W]` in [-1, 1] to normalised latents `[B, z, F, h, w]` and back.

    T = 1 + temporal_compression * (F - 1); H = h * spatial_compression (same for W).
    """

    def __init__(self, model: AutoencoderKLWan, cfg: VAEConfig):
        super().__init__()
        self.model = model  # the diffusers module (its state dict is the checkpoint format)
        self.cfg = cfg
        mean = torch.tensor(cfg.latents_mean if cfg.latents_mean is not None else [0.0] * cfg.z_dim)
        std = torch.tensor(cfg.latents_std if cfg.latents_std is not None else [1.0] * cfg.z_dim)
        if mean.numel() != cfg.z_dim or std.numel() != cfg.z_dim:
            raise ValueError(f"latents_mean/latents_std need {cfg.z_dim} entries (z_dim)")
        # [1, z, 1, 1, 1]; not persistent: the values live in the diffusers config
        self.register_buffer("latents_mean", mean.view(1, -1, 1, 1, 1).float(), persistent=False)
        self.register_buffer("latents_std", std.view(1, -1, 1, 1, 1).float(), persistent=False)
        use_onednn_convs(model)  # small convs would otherwise take PyTorch's slow CPU path
        use_channels_last(model)
        self._num_encoder_convs = sum(isinstance(m, WanCausalConv3d) for m in model.encoder.modules())
        self._num_decoder_convs = sum(isinstance(m, WanCausalConv3d) for m in model.decoder.modules())

    # ---- construction / persistence ----
    @classmethod
    def from_config(cls, cfg: VAEConfig) -> "VideoVAE":
        """A randomly initialised VAE of the given shape."""
        return cls(AutoencoderKLWan(**cfg.to_diffusers()), cfg)

    @classmethod
    def from_pretrained(cls, path: str | Path, torch_dtype: torch.dtype | None = None) -> "VideoVAE":
        """Load a diffusers `AutoencoderKLWan` folder (config.json + safetensors), offline, or the
        original release's `Wan2.1_VAE.pth` (the file, or a folder holding it)."""
        path = Path(path)
        if path.is_file():
            return cls.from_wan_release(path, torch_dtype)
        if not (path / "config.json").is_file() and (path / RELEASE_VAE_NAME).is_file():
            return cls.from_wan_release(path / RELEASE_VAE_NAME, torch_dtype)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no VAE at {path} (expected a diffusers folder with config.json, or {RELEASE_VAE_NAME})")
        model = AutoencoderKLWan.from_pretrained(path, torch_dtype=torch_dtype, local_files_only=True)
        return cls(model, VAEConfig.from_dict(dict(model.config)))

    @classmethod
    def from_wan_release(cls, file: str | Path, torch_dtype: torch.dtype | None = None) -> "VideoVAE":
        """The original `Wan2.1_VAE.pth` (a `WanVAE_` state dict), renamed by diffusers'
        `convert_wan_vae_to_diffusers`. Widths come from the weights; the rest of the architecture
        and the latent mean/std (which the file does not hold) are Wan2.1's, i.e. diffusers'
        `AutoencoderKLWan` defaults."""
        from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

        from models.wan_weights import WeightsError, check_state, read_weights_file

        state = read_weights_file(file)
        if not isinstance(state, dict) or "encoder.conv1.weight" not in state or "conv1.weight" not in state:
            raise WeightsError(f"{file}: not a Wan2.1 VAE state dict (no encoder.conv1 / conv1 weights)")
        state = convert_wan_vae_to_diffusers(state)
        defaults = {k: p.default for k, p in inspect.signature(AutoencoderKLWan.__init__).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        cfg = VAEConfig.from_dict({**defaults, "base_dim": state["encoder.conv_in.weight"].shape[0],
                                   "z_dim": state["quant_conv.weight"].shape[0] // 2})
        if cfg.z_dim != defaults["z_dim"]:  # Wan2.1's statistics are for its 16 channels only
            cfg.latents_mean = cfg.latents_std = None
        with torch.device("meta"):  # no random init of ~127M parameters that are overwritten next
            model = AutoencoderKLWan(**cfg.to_diffusers())
        check_state({k: v.shape for k, v in model.state_dict().items()}, state, str(file))
        model.load_state_dict(state, assign=True)
        return cls(model.to(dtype=torch_dtype) if torch_dtype is not None else model, cfg)

    def save_pretrained(self, path: str | Path) -> None:
        """Write a diffusers folder (config.json + diffusion_pytorch_model.safetensors)."""
        self.model.save_pretrained(Path(path), safe_serialization=True)

    # ---- sizes ----
    @property
    def z_dim(self) -> int:
        return self.cfg.z_dim

    @property
    def temporal_compression(self) -> int:
        return self.cfg.temporal_compression

    @property
    def spatial_compression(self) -> int:
        return self.cfg.spatial_compression

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def num_video_frames(self, latent_frames: int) -> int:
        """Video frames that `latent_frames` latent frames decode to (from the start of a video)."""
        return 1 + self.temporal_compression * (latent_frames - 1)

    # ---- normalisation ----
    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents -> the normalised latents the transformer works on."""
        return (z - self.latents_mean.to(z.dtype)) / self.latents_std.to(z.dtype)

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> raw VAE latents."""
        return latents * self.latents_std.to(latents.dtype) + self.latents_mean.to(latents.dtype)

    # ---- encode ----
    def encode(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """video `[B, 3, T, H, W]` in [-1, 1], T = 1 + k * temporal_compression -> latents `[B, z, F, h, w]`.

        Uses the posterior mean, or a posterior sample drawn with `generator` when one is given.
        """
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"expected video [B, 3, T, H, W], got {tuple(video.shape)}")
        tc, sc = self.temporal_compression, self.spatial_compression
        t, h, w = video.shape[2:]
        if (t - 1) % tc:
            raise ValueError(f"video frame count must be 1 + a multiple of {tc}, got {t}")
        if h % sc or w % sc:
            raise ValueError(f"video height/width must be multiples of {sc}, got {h}x{w}")
        x = video.to(self.dtype).contiguous(memory_format=torch.channels_last_3d)
        if self.model.config.patch_size is not None:
            x = patchify(x, patch_size=self.model.config.patch_size)
        cache: list = [None] * self._num_encoder_convs  # this call's causal-conv cache
        # frame 0 alone, then tc frames per latent frame, as diffusers does
        pieces = [x[:, :, :1]] + (list(x[:, :, 1:].split(tc, dim=2)) if t > 1 else [])
        out = torch.cat([self.model.encoder(p, feat_cache=cache, feat_idx=[0]) for p in pieces], dim=2)
        moments = self.model.quant_conv(out)  # [B, 2z, F, h, w]
        mean, logvar = moments.chunk(2, dim=1)
        if generator is None:
            z = mean
        else:
            std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
            noise = torch.randn(mean.shape, generator=generator, device=generator.device, dtype=mean.dtype)
            z = mean + std * noise.to(mean.device)
        return self.normalize(z)

    def encode_image(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """image `[B, 3, H, W]` in [-1, 1] -> one latent frame `[B, z, 1, h, w]`."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected image [B, 3, H, W], got {tuple(image.shape)}")
        return self.encode(image.unsqueeze(2), generator=generator)

    def encode_still(self, image: torch.Tensor, latent_frames: int) -> torch.Tensor:
        """image `[B, 3, H, W]` in [-1, 1] -> the last latent frame `[B, z, 1, h, w]` of a still video of it
        `latent_frames` latent frames long: the image in the code of a video's later frames."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected image [B, 3, H, W], got {tuple(image.shape)}")
        video = image.unsqueeze(2).expand(-1, -1, self.num_video_frames(latent_frames), -1, -1)  # [B, 3, T, H, W]
        return self.encode(video)[:, :, -1:]

    def encode_start_image(self, image: torch.Tensor, still_frames: int = 0) -> torch.Tensor:
        """The latent `[B, z, 1, h, w]` a stream commits to its sink for a start image `[B, 3, H, W]`
        (`StreamConfig.image_still_frames`): `encode_image` with 0, else `encode_still`."""
        return self.encode_still(image, still_frames) if still_frames > 0 else self.encode_image(image)

    # ---- decode ----
    def streaming_decoder(self, batch_size: int = 1) -> "StreamingDecoder":
        """A decoder with its own causal cache, for one stream (or a fixed batch of streams)."""
        return StreamingDecoder(self, batch_size)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents `[B, z, F, h, w]` (normalised) -> video `[B, 3, 1 + tc * (F - 1), H, W]` in [-1, 1].

        Runs with the caller's grad mode (usable in training); equals diffusers' `decode`.
        """
        cache: list = [None] * self._num_decoder_convs
        return self._decode_frames(latents, cache, first=True)

    def _decode_frames(self, latents: torch.Tensor, cache: list, first: bool) -> torch.Tensor:
        """Decode consecutive latent frames `[B, z, c, h, w]`, reading and updating `cache`.

        At the start of a video the first latent frame goes through alone (`first_chunk`: it decodes
        to one frame); the remaining frames go through together. Every temporal conv is causal and
        keeps its last inputs in `cache`, so this equals diffusers' frame-by-frame walk.
        """
        if latents.ndim != 5 or latents.shape[1] != self.z_dim:
            raise ValueError(f"expected latents [B, {self.z_dim}, F, h, w], got {tuple(latents.shape)}")
        z = self.denormalize(latents.to(self.dtype)).contiguous(memory_format=torch.channels_last_3d)
        z = self.model.post_quant_conv(z)  # [B, z, c, h, w]
        decoder = self.model.decoder
        outs = []
        if first:
            outs.append(decoder(z[:, :, :1], feat_cache=cache, feat_idx=[0], first_chunk=True))  # [B, 3, 1, H, W]
            z = z[:, :, 1:]
        if z.shape[2]:
            outs.append(decoder(z, feat_cache=cache, feat_idx=[0]))  # [B, 3, tc * c, H, W]
        video = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
        if self.model.config.patch_size is not None:
            video = unpatchify(video, patch_size=self.model.config.patch_size)
        return video.clamp(-1.0, 1.0).contiguous()


class StreamingDecoder:
    """Decodes one latent video chunk by chunk; made by `VideoVAE.streaming_decoder`.

    The concatenated outputs of `decode_chunk` equal `VideoVAE.decode` of the concatenated latents.
    Not thread-safe by itself (one stream = one decoder); decoders sharing a VAE are independent.
    """

    def __init__(self, vae: VideoVAE, batch_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.vae = vae
        self.batch_size = batch_size
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next chunk starts a new video."""
        self._cache: list = [None] * self.vae._num_decoder_convs  # per causal conv: its last inputs
        self.latent_frames_seen = 0

    @torch.no_grad()
    def decode_chunk(self, latents: torch.Tensor) -> torch.Tensor:
        """latents `[B, z, c, h, w]` -> video `[B, 3, T', H, W]` in [-1, 1].

        T' = tc * c, except 1 + tc * (c - 1) for the first chunk of a stream.
        """
        if latents.ndim != 5 or latents.shape[0] != self.batch_size:
            raise ValueError(
                f"expected latents [{self.batch_size}, z, c, h, w] for this decoder, got {tuple(latents.shape)}"
            )
        if latents.shape[2] == 0:
            raise ValueError("a chunk needs at least one latent frame")
        video = self.vae._decode_frames(latents, self._cache, first=self.latent_frames_seen == 0)
        self.latent_frames_seen += latents.shape[2]
        return video

    def _steady_signature(self) -> tuple | None:
        """Shapes of the cache entries once each is a tensor or unused (None) — a stream past its first
        chunk — else None (a fresh stream, or first-chunk markers still in the cache)."""
        if self.latent_frames_seen == 0 or not all(c is None or isinstance(c, torch.Tensor) for c in self._cache):
            return None
        return tuple(None if c is None else tuple(c.shape) for c in self._cache)

    @staticmethod
    @torch.no_grad()
    def decode_together(decoders: list["StreamingDecoder"], latents: list[torch.Tensor]) -> list[torch.Tensor]:
        """`decode_chunk` of many single-stream decoders, each `latents[i]` `[1, z, c_i, h, w]`, as few
        batched decoder passes as possible: streams past their first chunk whose caches have the same
        shapes and whose chunks have the same length run as one batch (their caches are stacked along
        the batch, decoded, and split back); the rest decode one by one. Returns `[1, 3, T_i, H, W]` each,
        equal to decoding every stream on its own (batch rows are independent)."""
        outputs: list[torch.Tensor | None] = [None] * len(decoders)
        groups: dict[tuple, list[int]] = {}
        for i, (decoder, z) in enumerate(zip(decoders, latents)):
            signature = decoder._steady_signature()
            if decoder.batch_size != 1 or signature is None:
                outputs[i] = decoder.decode_chunk(z)
            else:
                groups.setdefault((signature, tuple(z.shape)), []).append(i)
        for members in groups.values():
            if len(members) == 1:
                outputs[members[0]] = decoders[members[0]].decode_chunk(latents[members[0]])
                continue
            vae = decoders[members[0]].vae
            cache = [None if decoders[members[0]]._cache[k] is None else torch.cat([decoders[i]._cache[k] for i in members])
                     for k in range(len(decoders[members[0]]._cache))]
            video = vae._decode_frames(torch.cat([latents[i] for i in members]), cache, first=False)  # [n, 3, T, H, W]
            for row, i in enumerate(members):
                decoders[i]._cache = [None if c is None else c[row:row + 1].clone() for c in cache]
                decoders[i].latent_frames_seen += latents[i].shape[2]
                outputs[i] = video[row:row + 1]
        return outputs


def frames_to_uint8(video: torch.Tensor) -> np.ndarray:
    """video `[B, 3, T, H, W]` in [-1, 1] -> uint8 numpy `[B, T, H, W, 3]`."""
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"expected video [B, 3, T, H, W], got {tuple(video.shape)}")
    pixels = ((video.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 4, 1).cpu().numpy()  # [B, T, H, W, 3]


def uint8_to_video(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 `[B, T, H, W, 3]` -> float32 video `[B, 3, T, H, W]` in [-1, 1]."""
    frames = torch.as_tensor(frames)
    if frames.ndim != 5 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames [B, T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    return frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
