"""Stage `vae`: train a small AutoencoderKLWan on shapes videos (shapes family only).

Loss per clip: L1 + mse_weight * MSE between the clip and its reconstruction (from a posterior
sample, or from the posterior mean with `sample_posterior: false`, which converges much faster on
a small budget), + kl_weight * KL(q(z|x) || N(0, I)) averaged per latent element (a beta-VAE with a
small beta, as latent diffusion autoencoders are trained, minus the adversarial term). Pixels
that differ from their frame's background (the per-frame median colour) weigh `1 + object_weight`:
the objects are a few percent of the pixels but all of the prompt; with `motion_weight`, pixels that
change over the clip weigh more again (a talking face's mouth is a few pixels but all of its
lip-sync). Clips are random spatial crops (the VAE is fully convolutional), which makes a step cheap
on a CPU. After training
the per-channel mean / std of the latents of full-size clips are measured and stored in the VAE
config, so the transformer sees normalised latents.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from distill.config import ShapesDataConfig, VAEStageConfig
from distill.shapes_data import ShapesDataset, to_model_video
from distill.trainer import Method, OptimSpec
from models.vae import VideoVAE


def decode_unclamped(vae: VideoVAE, z: torch.Tensor) -> torch.Tensor:
    """Raw latents [B, z, F, h, w] -> video [B, 3, T, H, W], differentiable and not clamped
    (`VideoVAE.decode` clamps to [-1, 1], which would stop gradients of saturated pixels)."""
    cache: list = [None] * vae._num_decoder_convs
    z = vae.model.post_quant_conv(z)
    decoder = vae.model.decoder
    first = decoder(z[:, :, :1], feat_cache=cache, feat_idx=[0], first_chunk=True)  # [B, 3, 1, H, W]
    if z.shape[2] == 1:
        return first
    rest = decoder(z[:, :, 1:], feat_cache=cache, feat_idx=[0])  # [B, 3, tc*(F-1), H, W]
    return torch.cat([first, rest], dim=2)


def object_mask(video: torch.Tensor) -> torch.Tensor:
    """[B, 1, T, H, W] 1.0 where a pixel of video [B, 3, T, H, W] (-1..1) differs from its frame's median colour
    (the background) by more than 0.1 in some channel: the shapes' objects, a face's features."""
    background = video.flatten(3).median(dim=3).values[..., None, None]  # [B, 3, T, 1, 1]
    return ((video - background).abs().amax(dim=1, keepdim=True) > 0.1).float()


def object_weights(video: torch.Tensor, object_weight: float, motion_weight: float = 0.0,
                   first_frame_weight: float = 1.0) -> torch.Tensor:
    """Per-pixel loss weights [B, 1, T, H, W], normalised to mean 1: 1, plus `object_weight` where a pixel
    differs from its frame's median colour (the background) by more than 0.1, plus `motion_weight` where it
    differs from its own median over the clip's frames by more than 0.1 (what moves: a talking face's mouth
    and eyelids, a shape's path); all of video frame 0 times `first_frame_weight` (the causal VAE codes it
    alone, as it codes a stream's start image, and it is 1 frame of a long clip's 81)."""
    weight = 1.0 + object_weight * object_mask(video)
    if motion_weight:
        still = video.median(dim=2, keepdim=True).values  # [B, 3, 1, H, W]
        weight = weight + motion_weight * ((video - still).abs().amax(dim=1, keepdim=True) > 0.1).float()
    if first_frame_weight != 1.0:
        weight = torch.cat([weight[:, :, :1] * first_frame_weight, weight[:, :, 1:]], dim=2)
    return weight / weight.mean()


def video_dataset(seed: int, data_cfg):
    """The procedural videos a data config describes: shapes (`ShapesDataConfig`) or talking faces
    (`AvatarDataConfig`); `.sample(i).video` is uint8 [T, H, W, 3] either way."""
    from distill.config import AvatarDataConfig

    if isinstance(data_cfg, AvatarDataConfig):
        from distill.avatar_data import AvatarDataset

        return AvatarDataset(seed, data_cfg)
    return ShapesDataset(seed, data_cfg)


class VAEMethod(Method):
    main_role = "vae"

    def __init__(self, vae: VideoVAE, cfg: VAEStageConfig, data_cfg: ShapesDataConfig, seed: int = 0):
        self.vae = vae.train()
        self.cfg = cfg
        self.shapes = video_dataset(seed, dataclasses.replace(data_cfg, frames=cfg.clip_frames))
        self.cursor = 0  # next dataset index
        self.gen = torch.Generator().manual_seed(seed)

    def roles(self):
        return {"vae": self.vae}

    def optim_specs(self):
        return {"vae": OptimSpec(self.cfg.lr, self.cfg.betas, self.cfg.weight_decay)}

    def batch(self) -> torch.Tensor:
        """Next clips `[B, 3, T, crop, crop]` in [-1, 1]."""
        clips = []
        for _ in range(self.cfg.batch_size):
            video = to_model_video(self.shapes.sample(self.cursor).video)  # [3, T, H, W]
            self.cursor += 1
            c = self.cfg.crop
            if c and c < video.shape[-1]:
                y, x = torch.randint(0, video.shape[-2] - c + 1, (2,), generator=self.gen).tolist()
                video = video[..., y:y + c, x:x + c]
            clips.append(video)
        return torch.stack(clips).to(self.vae.device)

    def loss(self, role, step):
        """L1 + mse_weight * MSE + kl_weight * mean KL (see the module docstring)."""
        video = self.batch()  # [B, 3, T, h, w]
        posterior = self.vae.model.encode(video).latent_dist
        z = posterior.sample(generator=None) if self.cfg.sample_posterior else posterior.mean  # [B, z, F, h/8, w/8]
        recon = decode_unclamped(self.vae, z)
        weight = object_weights(video, self.cfg.object_weight, self.cfg.motion_weight, self.cfg.first_frame_weight)  # [B, 1, T, h, w]
        l1 = ((recon - video).abs() * weight).mean()
        mse = ((recon - video).pow(2) * weight).mean()
        kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).mean()
        loss = l1 + self.cfg.mse_weight * mse + self.cfg.kl_weight * kl
        return loss, {"loss": loss.item(), "l1": l1.item(), "kl": kl.item()}

    def state_dict(self):
        return {"cursor": self.cursor, "gen": self.gen.get_state()}

    def load_state_dict(self, state):
        self.cursor = state["cursor"]
        self.gen.set_state(state["gen"])


class DecoderFinetuneMethod(VAEMethod):
    """Stage `vae-decoder`: the same reconstruction loss, encoder frozen (its posterior mean is the
    latent), only `post_quant_conv` + decoder trained; clips long enough for the decoder's causal
    cache to reach the steady state that streaming runs in."""

    def __init__(self, vae: VideoVAE, cfg: VAEStageConfig, data_cfg: ShapesDataConfig, seed: int = 0):
        super().__init__(vae, cfg, data_cfg, seed)
        vae.model.requires_grad_(False)
        vae.model.post_quant_conv.requires_grad_(True)
        vae.model.decoder.requires_grad_(True)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Raw latents `[B, z, F, h, w]` of clips `[B, 3, T, h, w]` as the teacher's data has them: encoded
        in windows of `encode_window` latent frames (`encode_in_windows`), or whole when it is 0."""
        if self.cfg.encode_window:
            return encode_in_windows(self.vae, video, self.cfg.encode_window)
        return self.vae.model.encode(video).latent_dist.mean

    def loss(self, role, step):
        """Object-weighted L1 + mse_weight * MSE of decode(encoder mean) (module docstring); with
        `cut_share`, that share of clips cuts to another clip (`cut_clips`)."""
        video = self.batch()
        with torch.no_grad():
            z = self.encode(video)  # [B, z, F, h/8, w/8]
            if self.cfg.cut_share > 0:
                video, z = self.cut_clips(video, z)
            if self.cfg.latent_noise > 0:
                z = self.perturb(z)
        recon = decode_unclamped(self.vae, z)
        weight = object_weights(video, self.cfg.object_weight, self.cfg.motion_weight, self.cfg.first_frame_weight)
        l1 = ((recon - video).abs() * weight).mean()
        mse = ((recon - video).pow(2) * weight).mean()
        loss = l1 + self.cfg.mse_weight * mse
        return loss, {"loss": loss.item(), "l1": l1.item()}

    def perturb(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents [B, z, F, h, w] plus Gaussian noise of a level drawn per clip from U(0, latent_noise), in
        units of each channel's latent std: a generator's latents are never exactly an encoder's, and a decoder
        trained only on the encoder's renders their small errors as speckle (the noise augmentation of cascaded
        diffusion, Ho et al. 2022, sec. 4.2, applied to the decoder's input)."""
        level = torch.rand(z.shape[0], generator=self.gen) * self.cfg.latent_noise  # [B]
        noise = torch.randn(z.shape, generator=self.gen)
        return z + (level.view(-1, 1, 1, 1, 1) * noise).to(z) * self.vae.latents_std.to(z)

    def cut_clips(self, video: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each clip, with chance `cut_share`, becomes a cut at a random latent frame j >= `cut_after`: the latents
        of its own frames before j, then those of another clip of the batch's size drawn afresh (same
        positions, encoded from that clip's start); its target video the same cut, at video frame
        1 + 4 (j - 1), the first frame latent j decodes to (the causal VAE's frame 0 is a latent alone)."""
        if self.cfg.cut_after >= z.shape[2]:
            raise ValueError(f"cut_after {self.cfg.cut_after} leaves no cut in clips of {z.shape[2]} latent frames")
        cut = [torch.rand((), generator=self.gen).item() < self.cfg.cut_share for _ in range(video.shape[0])]
        if not any(cut):
            return video, z
        t = self.vae.temporal_compression
        others = self.batch()  # [B, 3, T, h, w]
        z_other = self.encode(others)  # [B, z, F, h', w']
        video, z = video.clone(), z.clone()
        for i in (i for i, c in enumerate(cut) if c):
            j = int(torch.randint(max(1, self.cfg.cut_after), z.shape[2], (), generator=self.gen))
            z[i, :, j:] = z_other[i, :, j:]
            video[i, :, 1 + t * (j - 1):] = others[i, :, 1 + t * (j - 1):]
        return video, z


@torch.no_grad()
def encode_in_windows(vae: VideoVAE, video: torch.Tensor, window: int) -> torch.Tensor:
    """Raw posterior-mean latents `[B, z, F, h, w]` of a long clip `[B, 3, 1 + tc (F - 1), H, W]`, each encoded
    no further than `window` latent frames from the start of an encoder pass: the first window from the
    clip's start, each next one from the video frame before it (whose lone latent, an image's, is dropped).

    The causal encoder is not stationary within the reach of its start: a clip's latents 0..8 differ from
    those it gives an hour into a video. The teacher learns, and the student makes, latents of the first
    kind (its clips are encoded whole, `teacher.clip_latent_frames` long), so a decoder that must decode
    a long stream of them is trained on long clips encoded this way."""
    if window < 2:
        raise ValueError(f"encode_window must be >= 2 latent frames, got {window}")
    tc = vae.temporal_compression
    frames = video.shape[2]
    step = tc * (window - 1)  # video frames of a window after its lead frame
    pieces = [vae.model.encode(video[:, :, :1 + step]).latent_dist.mean]  # [B, z, <= window, h, w]
    for start in range(1 + step, frames, step):
        piece = vae.model.encode(video[:, :, start - 1:start + step]).latent_dist.mean
        pieces.append(piece[:, :, 1:])  # drop the lead frame's own latent
    return torch.cat(pieces, dim=2)


@torch.no_grad()
def with_latent_stats(vae: VideoVAE, data_cfg: ShapesDataConfig, clips: int, seed: int) -> VideoVAE:
    """The same VAE with `latents_mean` / `latents_std` measured on `clips` full-size clips."""
    vae = vae.eval()
    base = dataclasses.replace(vae.cfg, latents_mean=None, latents_std=None)
    raw = VideoVAE(vae.model, base)  # normalisation off: raw posterior means
    shapes = video_dataset(seed + 1, data_cfg)
    zs = []
    for start in range(0, clips, 8):
        video = torch.stack([to_model_video(shapes.sample(i).video) for i in range(start, min(start + 8, clips))])
        zs.append(raw.encode(video.to(vae.device)).float())  # [b, z, F, h, w]
    z = torch.cat(zs).transpose(0, 1).flatten(1)  # [z, N]
    mean = tuple(round(float(v), 6) for v in z.mean(1))
    std = tuple(round(float(v), 6) for v in z.std(1).clamp_min(1e-3))
    cfg = dataclasses.replace(vae.cfg, latents_mean=mean, latents_std=std)
    vae.model.register_to_config(latents_mean=list(mean), latents_std=list(std))
    return VideoVAE(vae.model, cfg)
