"""The distillation stages for avatar models (a model config with an `audio` section).

The same stages as the shapes recipe (distill/pipeline.py runs these variants when the model takes
audio), with two conditions added to every clip the models see:

- **identity sink**: latent frame 0 of every clip is the clean start image (VAE-encoded frame 0 of
  the sample, timestep 0, never noised, no loss on it), followed by contiguous frames taken from
  anywhere in the video at adjacent positions -- which is what the streaming student sees: the image
  in the one-frame sink, the rolling window right after it;
- **audio**: per latent frame, the window of audio features (models/audio.py `AudioConditioner`)
  read by the transformer's audio cross-attention.

Teacher: flow matching on such clips (loss on frames 1..). ODE pairs: the teacher's ODE with frame 0
held clean (no classifier-free guidance: `guidance` 1 is the conditional model; the text is constant).
ODE init: CausVid's regression with the image as a lead chunk of its own (`lead_frames=1`).
Self-forcing: rollouts through the streaming generator from the sample's first frame with its audio
fed to the stream; teacher and critic judge windows [image | rollout frames] with the windows' audio.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from distill.avatar_data import AvatarDataset
from distill.config import AvatarDataConfig
from distill.dmd import dmd_generator_loss, flow_matching_loss
from distill.ode_init import ODERegressionMethod
from distill.ode_pairs import SHARD_PATTERN, _write_shard
from distill.parallel import broadcast_ints, global_batch, rank_slice
from distill.rollout import rollout, split_windows
from distill.self_forcing import SelfForcingDMD
from distill.shapes_data import to_model_video
from distill.teacher_stage import FlowMatchMethod
from models.audio import AudioConditioner
from models.schedule import shift_sigma


def conditioner(model_cfg, temporal_compression: int) -> AudioConditioner:
    from models.audio import build_audio_encoder

    enc = build_audio_encoder(model_cfg.audio, model_cfg.stream.fps)
    return AudioConditioner(model_cfg.audio, enc, model_cfg.stream.fps, temporal_compression)


def data_config(model_cfg, data: AvatarDataConfig) -> AvatarDataConfig:
    """The avatar data at the model's canvas, fps and sample rate."""
    s = model_cfg.stream
    return dataclasses.replace(data, width=s.width, height=s.height, fps=s.fps, sample_rate=model_cfg.audio.sample_rate)


@torch.no_grad()
def build_avatar_latents(vae, text_encoder, cond: AudioConditioner, data_cfg: AvatarDataConfig, num_clips: int,
                         latent_frames: int, seed: int, batch: int = 16, progress: bool = True) -> dict:
    """latents [N, C, F, h, w], audio windows [N, F, M, A] (half), text [N, L, D] (half), prompts."""
    frames = vae.num_video_frames(latent_frames)
    faces = AvatarDataset(seed, data_cfg)
    latents, audio, texts, prompts = [], [], [], []
    starts = range(0, num_clips, batch)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="encode avatar latents", dynamic_ncols=True)
    for start in starts:
        samples = [faces.sample(i, frames) for i in range(start, min(start + batch, num_clips))]
        video = torch.stack([to_model_video(s.video) for s in samples]).to(vae.device)  # [b, 3, T, H, W]
        latents.append(vae.encode(video).float().cpu())
        pcm = torch.from_numpy(np.stack([s.audio for s in samples]))  # [b, S]
        audio.append(cond.windows(pcm, 0, 0, latent_frames).half())  # [b, F, M, A]
        texts.append(text_encoder.get_batch([s.prompt for s in samples])[0].half().cpu())
        prompts += [s.prompt for s in samples]
    return {"latents": torch.cat(latents), "audio": torch.cat(audio), "text": torch.cat(texts), "prompts": prompts}


def image_lead_crops(data: dict, gen: torch.Generator, b: int, frames: int):
    """b clips [image | frames - 1 contiguous frames from anywhere after it]: (x0 [b, C, frames, h, w],
    audio [b, frames, M, A], text [b, L, D]) from a latent dataset."""
    lat, aud = data["latents"], data["audio"]
    n, f = lat.shape[0], lat.shape[2]
    if frames > f:
        raise ValueError(f"{frames} frames asked of clips of {f} latent frames")
    idx = torch.randint(0, n, (b,), generator=gen).tolist()
    start = torch.randint(1, f - frames + 2, (b,), generator=gen).tolist()
    x0 = torch.stack([torch.cat([lat[i, :, :1], lat[i, :, s:s + frames - 1]], dim=1) for i, s in zip(idx, start)])
    audio = torch.stack([torch.cat([aud[i, :1], aud[i, s:s + frames - 1]]) for i, s in zip(idx, start)]).float()
    return x0, audio, data["text"][idx].float(), idx


def lead_sigma(sigma: torch.Tensor, frames: int) -> torch.Tensor:
    """Per-frame sigmas [B, F] from per-clip ones [B] (or per-frame [B, F]) with frame 0 clean."""
    s = sigma[:, None].expand(-1, frames).clone() if sigma.ndim == 1 else sigma.clone()
    s[:, 0] = 0.0
    return s


class AvatarFlowMatchMethod(FlowMatchMethod):
    """Teacher: flow matching on [clean image | noised frames] clips with audio (module docstring)."""

    def __init__(self, model, schedule, data: dict, null_text, cfg, seed: int = 0, device="cpu"):
        super().__init__(model, schedule, data, null_text, cfg, seed=seed, device=device)
        self.data = data

    def loss(self, role, step):
        """Flow-matching MSE (teacher_stage.py) on frames 1.. of image-led clips."""
        b, ft = self.cfg.batch_size, self.cfg.train_frames
        x0, audio, text, _ = image_lead_crops(self.data, self.gen, b, ft)
        x0, audio, text = x0.to(self.device), audio.to(self.device), text.to(self.device)
        sigma = lead_sigma(shift_sigma(torch.rand(b, generator=self.gen), self.schedule.cfg.shift), ft).to(self.device)
        eps = torch.randn(x0.shape, generator=self.gen).to(self.device)
        x_t = self.schedule.add_noise(x0, eps, sigma)
        pred = self.model(x_t, self.schedule.timestep(sigma), text, audio=audio)
        loss = F.mse_loss(pred[:, :, 1:].float(), self.schedule.flow_target(x0, eps)[:, :, 1:])
        return loss, {"loss": loss.item()}


@torch.no_grad()
def sample_avatar_ode_pairs(teacher, schedule, data: dict, cfg, directory: Path, seed: int = 0,
                            device: torch.device | str = "cpu", progress: bool = True) -> int:
    """ODE pairs of image-led clips (frame 0 held clean along the trajectory), with their audio."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    steps = cfg.steps or schedule.cfg.teacher_steps
    sigmas = schedule.teacher_sigmas(steps, cfg.shift or schedule.cfg.teacher_shift)
    keep = schedule.student_sigmas()
    batches = -(-cfg.num_pairs // cfg.batch_size)
    todo = [j for j in range(batches) if not (directory / SHARD_PATTERN.format(j)).exists()]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=batches, initial=batches - len(todo), desc="ode-pairs (avatar)", unit="batch", dynamic_ncols=True)
    import time

    start_time, written = time.perf_counter(), 0
    for j in todo:
        if cfg.max_minutes > 0 and written > 0 and time.perf_counter() - start_time > cfg.max_minutes * 60:
            break
        gen = torch.Generator().manual_seed(seed * 1_000_003 + j)
        b = min(cfg.batch_size, cfg.num_pairs - j * cfg.batch_size)
        x0, audio, text, idx = image_lead_crops(data, gen, b, cfg.frames)
        image, audio, text = x0[:, :, :1].to(device), audio.to(device), text.to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)

        def model_fn(x, t):
            x = torch.cat([image, x[:, :, 1:]], dim=2)
            t = t.clone()
            t[:, 0] = 0.0
            return teacher(x, t, text, audio=audio).float()

        out, kept = schedule.sample(model_fn, noise, sigmas, solver=cfg.solver, keep_sigmas=keep, per_frame_timesteps=True)
        out[:, :, :1] = image
        kept[:, :, :, :1] = image
        _write_shard(directory / SHARD_PATTERN.format(j), {
            "states": kept.transpose(0, 1).float().cpu(), "x0": out.float().cpu(), "text": text.half().cpu(),
            "audio": audio.half().cpu(), "sigmas": keep.float().cpu(),
        }, [data["prompts"][i] for i in idx])
        written += b
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return written


class AvatarODERegression(ODERegressionMethod):
    """ODE init (CausVid eq. 4) with the image as a clean lead chunk and the pairs' audio."""

    def batch(self):
        """(x_in [B, C, F, h, w], sigma [B, F], x0, text, audio [B, F, M, A]): frame 0 the clean image, then
        one of the student's noise levels per chunk of `chunk_frames` frames, chunks counted after it."""
        n, (k, _, f) = len(self.pairs), self.pairs.state_shape[:3]
        b = self.cfg.batch_size
        g = global_batch(b)
        idx = rank_slice(torch.randint(0, n, (g,), generator=self.gen), b)
        chunks = -(-(f - 1) // self.chunk)
        level = rank_slice(torch.randint(0, k, (g, chunks), generator=self.gen), b)
        level = torch.cat([torch.zeros(b, 1, dtype=level.dtype), level.repeat_interleave(self.chunk, 1)[:, :f - 1]], 1)
        self.last_ids = idx.tolist()
        pairs = self.pairs.get(self.last_ids, keys=("states", "x0", "text", "audio"))
        states = pairs["states"]  # [B, K, C, F, h, w]
        x_in = states.gather(1, level[:, None, None, :, None, None].expand(b, 1, *states.shape[2:])).squeeze(1)
        x_in[:, :, 0] = pairs["x0"][:, :, 0]  # the image, clean
        sigma = lead_sigma(self.schedule.student_sigmas()[level], f)
        return tuple(v.to(self.device) for v in (x_in, sigma, pairs["x0"], pairs["text"], pairs["audio"]))

    def loss(self, role, step):
        """MSE of the block-causal x0 prediction to the teacher's x0 on frames 1.."""
        x_in, sigma, x0, text, audio = self.batch()
        flow = self.student(x_in, self.schedule.timestep(sigma), text, chunk_frames=self.chunk, audio=audio, lead_frames=1)
        pred = self.schedule.x0_from_flow(x_in, flow.float(), sigma)
        loss = F.mse_loss(pred[:, :, 1:], x0[:, :, 1:])
        return loss, {"loss": loss.item()}


class AvatarSelfForcingDMD(SelfForcingDMD):
    """Self-Forcing DMD (self_forcing.py) on avatar rollouts: streams start from a sample's first frame and
    are fed its audio; the real / fake scores judge [image | window] clips with the windows' audio."""

    def __init__(self, gen, teacher, critic, faces: AvatarDataset, cfg, seed: int = 0):
        from distill.avatar_data import PROMPT

        super().__init__(gen, teacher, critic, [PROMPT], cfg, seed=seed)
        self.faces = faces
        self.cond: AudioConditioner = gen.audio

    def _rollout(self, grad: bool):
        """(windows [B*n, C, 1 + W, h, w] led by the image latent, text [B*n, L, D], audio [B*n, 1 + W, M, A])."""
        b = self.cfg.batch_size
        g = global_batch(b)
        idx = rank_slice(torch.randint(0, 2**31 - 1, (g,), generator=self.rng).tolist(), b)
        seeds = rank_slice(torch.randint(0, 2**31 - 1, (g,), generator=self.rng).tolist(), b)
        k = self.schedule.num_student_steps
        exits = broadcast_ints(torch.randint(0, k, (self.cfg.rollout_chunks,), generator=self.rng).tolist())
        self.last_ids = [*idx, *seeds]
        c = self.gen.cfg.stream.chunk_frames
        latent = 1 + self.cfg.rollout_chunks * c
        _, end = self.cond.span(latent - 1, 1)
        samples = [self.faces.sample(i, end) for i in idx]
        pcm = [s.audio for s in samples]
        self.student.train(grad)
        x = rollout(self.gen, [s.prompt for s in samples], seeds, self.cfg.rollout_chunks, exit_steps=exits, grad=grad,
                    images=[s.video[0] for s in samples], audio=pcm)  # [B, C, 1 + n*c, h, w]
        audio = self.cond.windows(torch.from_numpy(np.stack(pcm)), 0, 0, latent).to(self.device)
        w = self.cfg.score_frames - 1
        windows = split_windows(x[:, :, 1:].float(), w)  # [B*n, C, W, h, w]
        n = windows.shape[0] // b
        windows = torch.cat([x[:, :, :1].float().repeat(n, 1, 1, 1, 1), windows], dim=2)
        aw = split_windows(audio[:, 1:].permute(0, 2, 1, 3), w).permute(0, 2, 1, 3)  # [B*n, W, M, A]
        aw = torch.cat([audio[:, :1].repeat(n, 1, 1, 1), aw], dim=1)
        text = self.text.get_batch([s.prompt for s in samples])[0].to(self.device).float().repeat(n, 1, 1)
        return windows, text, aw

    def _lead_noise(self, x):
        x_t, sigma, eps = self._noise(x)
        sigma = lead_sigma(sigma, x.shape[2])
        x_t = torch.cat([x[:, :, :1], x_t[:, :, 1:]], dim=2)
        return x_t, sigma, eps

    def critic_loss(self):
        """DMD2 fake-score update (self_forcing.py) on frames 1.. of image-led windows."""
        with torch.no_grad():
            x, text, audio = self._rollout(grad=False)
        x_t, sigma, eps = self._lead_noise(x)
        pred = self.critic(x_t, self.schedule.timestep(sigma), text, audio=audio)
        loss = flow_matching_loss(pred[:, :, 1:], x[:, :, 1:], eps[:, :, 1:])
        return loss, {"critic_loss": loss.item()}

    def student_loss(self):
        """DMD generator loss (DMD eq. 7 / 8) on frames 1.. of image-led windows; real score without CFG
        when guidance is 1, else uncond = the audio layers skipped."""
        x, text, audio = self._rollout(grad=True)
        x_t, sigma, _ = self._lead_noise(x.detach())
        t = self.schedule.timestep(sigma)
        with torch.no_grad():
            flow = self.teacher(x_t, t, text, audio=audio).float()
            if self.cfg.guidance != 1.0:
                flow = flow + (self.cfg.guidance - 1.0) * (flow - self.teacher(x_t, t, text).float())
            real = self.schedule.x0_from_flow(x_t, flow, sigma)
            fake = self.schedule.x0_from_flow(x_t, self.critic(x_t, t, text, audio=audio).float(), sigma)
        loss = dmd_generator_loss(x[:, :, 1:], real[:, :, 1:], fake[:, :, 1:])
        return loss, {"dmd_loss": loss.item(), "real_gap": (x.detach() - real)[:, :, 1:].abs().mean().item()}
