"""The distillation stages for avatar models (a model config with an `audio` section).

The same stages as the shapes recipe (distill/pipeline.py runs these variants when the model takes
audio), with two conditions added to every clip the models see:

- **identity sink**: latent frame 0 of every clip is the clean start image (VAE-encoded frame 0 of
  the sample, timestep 0, never noised, no loss on it), followed by contiguous frames taken from
  anywhere in the video at adjacent positions -- which is what the streaming student sees: the image
  in the one-frame sink, the rolling window right after it;
- **audio**: per latent frame, the window of audio features (models/audio.py `AudioConditioner`)
  read by the transformer's audio cross-attention.

Teacher: flow matching on such clips (loss on frames 1..), with text dropout (the prompt replaced by "")
and, drawn independently, audio dropout: a share `audio_dropout` of the clips are seen with the audio
layers skipped (`audio=None`), which is the null audio of audio guidance. Not zero features: the mel
encoder maps silence to zero, and a silent clip must keep its closed mouth, not learn the average one.
Guided scores (`guided_flow`, used by the ODE pairs and the DMD real score): text and audio guidance
with separate scales, nested as MultiTalk (Kong et al. 2025) guides text and audio and as
InstructPix2Pix (Brooks et al. 2023, eq. 3) guides two conditions:
    v = v(x, 0, 0) + s_t (v(x, c, 0) - v(x, 0, 0)) + s_a (v(x, c, a) - v(x, c, 0))
(c the text, a the audio, 0 the null of each). ODE pairs: the teacher's ODE with frame 0 held clean.
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

from distill.avatar_data import AvatarDataset, mouth_box
from distill.config import AvatarDataConfig
from distill.dmd import lead_sigma, masked_mean
from distill.ode_init import ODERegressionMethod, frame_levels
from distill.ode_pairs import SHARD_PATTERN, _write_shard, lead_held
from distill.parallel import global_batch, rank_slice
from distill.self_forcing import RolloutInputs, SelfForcingDMD
from distill.shapes_data import to_model_video
from distill.teacher_stage import FlowMatchMethod, image_led_crops
from models.audio import AudioConditioner
from models.vae import uint8_to_video


def conditioner(model_cfg, temporal_compression: int) -> AudioConditioner:
    from models.audio import build_audio_encoder

    enc = build_audio_encoder(model_cfg.audio, model_cfg.stream.fps)
    return AudioConditioner(model_cfg.audio, enc, model_cfg.stream.fps, temporal_compression)


def data_config(model_cfg, data: AvatarDataConfig) -> AvatarDataConfig:
    """The avatar data at the model's canvas, fps and sample rate."""
    s = model_cfg.stream
    return dataclasses.replace(data, width=s.width, height=s.height, fps=s.fps, sample_rate=model_cfg.audio.sample_rate)


@torch.no_grad()
def build_avatar_latents(vae, text_encoder, cond: AudioConditioner, faces: AvatarDataset, num_clips: int,
                         latent_frames: int, batch: int = 16, progress: bool = True) -> dict:
    """latents [N, C, F, h, w], audio windows [N, F, M, A] (half), text [N, L, D] (half), prompts of the
    faces 0..N-1 of `faces`."""
    frames = vae.num_video_frames(latent_frames)
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


@torch.no_grad()
def still_leads(vae, faces: AvatarDataset, num_clips: int, still_frames: int, batch: int = 16) -> torch.Tensor:
    """[N, C, 1, h, w] the start image of faces 0..N-1 in the code a stream commits it in
    (`VideoVAE.encode_start_image` with the model's `stream.image_still_frames`)."""
    out = []
    for start in range(0, num_clips, batch):
        images = np.stack([faces.sample(i, 1).video[0] for i in range(start, min(start + batch, num_clips))])
        pixels = uint8_to_video(images[:, None])[:, :, 0].to(vae.device)  # [b, 3, H, W] as a stream's start image
        out.append(vae.encode_start_image(pixels, still_frames).float().cpu())
    return torch.cat(out)


def image_lead_crops(data: dict, gen: torch.Generator, b: int, frames: int):
    """b clips [image | frames - 1 contiguous frames from anywhere after it]: (x0 [b, C, frames, h, w],
    audio [b, frames, M, A], text [b, L, D]) from a latent dataset (teacher_stage.image_led_crops). The image
    is `data["lead"]` (the start image in the code the stream commits it in: `still_leads`) when the dataset
    has it, else the clip's latent frame 0."""
    lat, aud = data["latents"], data["audio"]
    lead = data.get("lead")
    x0, idx, start, _ = image_led_crops(lat, lat[:, :, :1] if lead is None else lead, gen, b, frames)
    audio = torch.stack([torch.cat([aud[i, :1], aud[i, s:s + frames - 1]]) for i, s in zip(idx, start)]).float()
    return x0, audio, data["text"][idx].float(), idx


def forward_dropping_audio(model, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, audio: torch.Tensor,
                           drop: torch.Tensor) -> torch.Tensor:
    """model(x, t, text, audio=audio) [B, C, F, h, w], except that the rows where `drop` [B] (bool) is set
    run with the audio layers skipped (`audio=None`: the null audio). Two passes over the two row sets."""
    if not drop.any():
        return model(x, t, text, audio=audio)
    if drop.all():
        return model(x, t, text)
    keep = ~drop
    out = torch.empty_like(x, dtype=torch.float32)
    out[keep] = model(x[keep], t[keep], text[keep], audio=audio[keep]).float()
    out[drop] = model(x[drop], t[drop], text[drop]).float()
    return out


def guided_flow(model, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, audio: torch.Tensor,
                null_text: torch.Tensor | None, text_scale: float, audio_scale: float, **kw) -> torch.Tensor:
    """Text-and-audio guided flow [B, C, F, h, w] (module docstring; MultiTalk's nesting):
        v = v(0, 0) + s_t (v(c, 0) - v(0, 0)) + s_a (v(c, a) - v(c, 0))
          = v(c, 0) + (s_t - 1) (v(c, 0) - v(0, 0)) + s_a (v(c, a) - v(c, 0)).
    s_a = 0 is the text-only guided flow, s_t = s_a = 1 the conditional flow v(c, a) (one pass).
    null_text [B or 1, L, D]: the empty prompt's states (needed when s_t != 1)."""
    full = model(x, t, text, audio=audio, **kw).float()
    if text_scale == 1.0 and audio_scale == 1.0:
        return full
    text_only = model(x, t, text, **kw).float()  # audio layers skipped: the null audio
    out = text_only + audio_scale * (full - text_only)
    if text_scale != 1.0:
        if null_text is None:
            raise ValueError("text guidance needs the empty prompt's states")
        uncond = model(x, t, null_text.expand_as(text), **kw).float()
        out = out + (text_scale - 1.0) * (text_only - uncond)
    return out


def image_led_flow(teacher, image: torch.Tensor, text: torch.Tensor, audio: torch.Tensor, null_text: torch.Tensor | None,
                   text_scale: float, audio_scale: float):
    """The teacher's ODE flow over an image-led clip, as `FlowMatchSchedule.sample(per_frame_timesteps=True)`
    calls it: model_fn(x [B, C, F, h, w], t [B, F]) -> `guided_flow` with latent frame 0 replaced by the clean
    `image` [B, C, 1, h, w] at timestep 0 (the identity sink is never noised). audio [B, F, M, A]."""

    return lead_held(lambda x, t: guided_flow(teacher, x, t, text, audio, null_text, text_scale, audio_scale), image)


def mouth_weight_map(identity, model_cfg, head_motion: float, weight: float) -> torch.Tensor:
    """[1, 1, h, w] latent loss weights of one face: 1 + `weight` on every latent pixel its mouth box
    (avatar_data.mouth_box, grown by the idle `head_motion`) touches, 1 elsewhere."""
    h, w = model_cfg.latent_height, model_cfg.latent_width
    s = model_cfg.stream
    sy, sx = s.height // h, s.width // w  # pixels per latent pixel
    rows, cols = mouth_box(identity, s.width, s.height, head_motion)
    weights = torch.ones(1, 1, h, w)
    weights[..., rows.start // sy:-(-rows.stop // sy), cols.start // sx:-(-cols.stop // sx)] += weight
    return weights


def dataset_mouth_weights(faces: AvatarDataset, n: int, model_cfg, weight: float) -> torch.Tensor:
    """[n, 1, 1, h, w] `mouth_weight_map` of the faces 0..n-1 (a latent dataset's clips)."""
    head_motion = faces.config.head_motion
    return torch.stack([mouth_weight_map(faces.identity(i), model_cfg, head_motion, weight) for i in range(n)])


class AvatarFlowMatchMethod(FlowMatchMethod):
    """Teacher: flow matching on [clean image | noised frames] clips with audio, text and audio dropout
    (module docstring). `mouth` [N, 1, 1, h, w]: per-clip latent loss weights (`dataset_mouth_weights`), or None."""

    def __init__(self, model, schedule, data: dict, null_text, cfg, seed: int = 0, device="cpu",
                 mouth: torch.Tensor | None = None):
        super().__init__(model, schedule, data, null_text, cfg, seed=seed, device=device)
        self.data = data
        if mouth is not None and len(mouth) != len(data["latents"]):
            raise ValueError(f"{len(mouth)} mouth weight maps for {len(data['latents'])} clips")
        self.mouth = mouth

    def loss(self, role, step):
        """Flow-matching MSE (teacher_stage.py) on frames 1.. of image-led clips; the prompt dropped to ""
        with `text_dropout`, the audio layers skipped with `audio_dropout` (independent draws). With mouth
        weights, the weighted mean sum(w e^2) / sum(w) over the same elements."""
        b, ft = self.cfg.batch_size, self.cfg.train_frames
        x0, audio, text, idx = image_lead_crops(self.data, self.gen, b, ft)
        drop_text = torch.rand(b, generator=self.gen) < self.cfg.text_dropout
        drop_audio = torch.rand(b, generator=self.gen) < self.cfg.audio_dropout
        text = torch.where(drop_text[:, None, None], self.null_text.float(), text)
        x0, audio, text = x0.to(self.device), audio.to(self.device), text.to(self.device)
        sigma = lead_sigma(self.train_sigma(b), ft).to(self.device)
        eps = torch.randn(x0.shape, generator=self.gen).to(self.device)
        x_t = self.schedule.add_noise(x0, eps, sigma)
        pred = forward_dropping_audio(self.model, x_t, self.schedule.timestep(sigma), text, audio, drop_audio.to(self.device))
        err = (pred[:, :, 1:].float() - self.schedule.flow_target(x0, eps)[:, :, 1:]) ** 2  # [B, C, F-1, h, w]
        weights = None if self.mouth is None else self.mouth[idx].to(self.device)  # [B, 1, 1, h, w]
        loss = masked_mean(err, weights)
        return loss, {"loss": loss.item()}


@torch.no_grad()
def sample_avatar_ode_pairs(teacher, schedule, data: dict, cfg, directory: Path, seed: int = 0,
                            device: torch.device | str = "cpu", progress: bool = True,
                            null_text: torch.Tensor | None = None) -> int:
    """ODE pairs of image-led clips (frame 0 held clean along the trajectory), with their audio; the flow
    is `guided_flow` with s_t = cfg.guidance, s_a = cfg.audio_guidance (null_text: the empty prompt [1, L, D])."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    steps = cfg.steps or schedule.cfg.teacher_steps
    sigmas = schedule.teacher_sigmas(steps, cfg.shift or schedule.cfg.teacher_shift)
    keep = schedule.student_sigmas()
    text_scale = cfg.guidance or schedule.cfg.guidance_scale
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

        model_fn = image_led_flow(teacher, image, text, audio, null_text, text_scale, cfg.audio_guidance)
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
        level = frame_levels(level, self.chunk, f, torch.ones(b, dtype=torch.bool))
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
    """Self-Forcing DMD (self_forcing.py, the same rollout code and serving-condition options) on avatar
    rollouts: each stream is a face of the dataset, opened from its first frame and fed its speech from media
    time 0; the real / fake scores judge [image | window] clips (the image clean, no loss on it) with the
    windows' audio, the real score guided by `guided_flow` (s_t = guidance, s_a = audio_guidance).

    Options: long rollouts (`rollout_chunks`, `rollout_min_chunks`, `dmd_window_chunks`) burn in as served
    and judge only the last window, with the audio of those frames' media time; a switch (`switch_share`,
    `switch_transition_chunks`) goes through `set_prompt` as a server's `session.update` does. The avatar
    text is constant, so a stream switches to that same prompt: it is trained on the state after the KV
    re-cache (or blend), while its audio stays where it is on the media timeline (the re-cache replays each
    held frame with the audio it was made with). `image_share` does not apply: every avatar stream starts
    from its face. `mouth_weight` weighs the latent pixels of each face's mouth box up in the DMD and critic
    losses (`mouth_weights`; dmd.py: the gradient of each element scales, the eq. 8 normaliser does not)."""

    lead_image = True
    switch_prompts = 1  # a switch keeps the avatar's one prompt
    has_mouth = True

    def __init__(self, gen, teacher, critic, faces: AvatarDataset, cfg, seed: int = 0, null_text=None):
        from distill.avatar_data import PROMPT

        if cfg.image_share > 0:
            raise ValueError("image_share does not apply to avatar models: every stream starts from its face image")
        super().__init__(gen, teacher, critic, [PROMPT], cfg, seed=seed)
        self.faces = faces
        self.cond: AudioConditioner = gen.audio
        self.null_text = null_text  # [1, L, D] the empty prompt (text guidance only)

    def _draw_ids(self, g):
        """A face (dataset index) per stream."""
        return torch.randint(0, 2**31 - 1, (g,), generator=self.rng).tolist()

    def _switch_ids(self, ids):
        """The same face and prompt: the switch re-caches under the avatar's (constant) text."""
        return list(ids)

    def _inputs(self, ids, new_ids, image_at, chunks):
        """Each face's first frame as the start image and its speech, long enough for `chunks` chunks."""
        _, end = self.cond.span(chunks * self.gen.cfg.stream.chunk_frames, 1)  # video frames the last chunk reads
        samples = [self.faces.sample(i, end) for i in ids]
        prompts = [x.prompt for x in samples]
        weights = None
        if self.cfg.mouth_weight > 0:
            weights = torch.stack([self.mouth_weights(x.params.identity) for x in samples])  # [B, 1, 1, h, w]
        return RolloutInputs(prompts, prompts, [x.video[0] for x in samples], [x.audio for x in samples], weights)

    def mouth_weights(self, identity) -> torch.Tensor:
        """[1, 1, h, w] latent loss weights of one face (`mouth_weight_map`)."""
        return mouth_weight_map(identity, self.gen.cfg, self.faces.config.head_motion, self.cfg.mouth_weight)

    def _window_audio(self, inputs, frames):
        """The audio windows of the judged frames, read from each stream's speech at their media time."""
        last = max(max(f) for f in frames) + 1
        audio = self.cond.windows(torch.from_numpy(np.stack(inputs.audio)), 0, 0, last)  # [B, last, M, A]
        return torch.cat([audio[:, f] for f in frames]).to(self.device).float()  # [B*n, W, M, A]

    @torch.no_grad()
    def real_x0(self, x_t, sigma, text, audio=None):
        """Teacher x0 from the text-and-audio guided flow (`guided_flow`)."""
        t = self.schedule.timestep(sigma)
        flow = guided_flow(self.teacher, x_t, t, text, audio, self.null_text, self.cfg.guidance, self.cfg.audio_guidance)
        return self.schedule.x0_from_flow(x_t, flow, sigma)
