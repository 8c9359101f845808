"""Stage `self-forcing`: Self-Forcing DMD (Huang et al. 2025, "Self Forcing: Bridging the
Train-Test Gap in Autoregressive Video Diffusion").

Roles: student (causal few-step generator, trained, EMA), teacher (frozen bidirectional, the real
score, with CFG), critic (bidirectional, initialised from the teacher, the fake score).

One step = `critic_steps` critic updates, then one student update:
- rollout: B streams through `StreamingGenerator.rollout_chunk` for `rollout_chunks` chunks, i.e.
  exactly the inference loop with its rolling KV cache (sink + window, evicting once the rollout
  is longer than the cache); every chunk stops at a random exit step (Self-Forcing Sec. 3.3),
  gradients only through the exit step's forward.
- the rollout is cut into windows of `score_frames` frames (the teacher's clip length) tiling it;
  noise level sigma ~ shift(U[min_sigma, max_sigma]) per window.
- options of the serving conditions (distill/config.py, docs/DISTILL.md): long rollouts whose
  last `dmd_window_chunks` chunks alone get gradient and are scored (the earlier ones are a
  served burn-in; Self-Forcing++ / Rolling Forcing), prompt switches made through the server's
  `set_prompt` (LongLive) with the frames after the switch scored under the new prompt, and
  streams opened from a start image (its latent is the clean first frame of the scored clip, as
  context only; with `image_lead`, every window of such a rollout leads with it, clean, as avatars do).
- student loss: DMD (distill/dmd.py, DMD eq. 7 with the eq. 8 normaliser) with
  real x0 = teacher under CFG `uncond + g (cond - uncond)`, fake x0 = critic.
- critic loss: flow matching on fresh detached rollouts (DMD2's fake-score update).

Randomness (distill/parallel.py): one generator, the same on every rank, draws each step's global
batch (prompts, stream seeds, DMD noise for world_size x batch_size streams); a rank keeps its own
slice. The exit steps are drawn from it too and broadcast from rank 0, so every rank runs the same
number of forward passes (FSDP2's collectives stay in step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distill.config import SelfForcingStageConfig
from distill.dmd import cfg_flow, dmd_generator_loss, flow_matching_loss, lead_sigma, masked_mean
from distill.parallel import broadcast_ints, global_batch, rank_slice
from distill.rollout import Switch, labelled_windows, run_rollout, score_windows
from distill.shapes_data import StartImages
from distill.trainer import Method, OptimSpec
from models.generator import StreamingGenerator
from models.schedule import FlowMatchSchedule, shift_sigma
from models.transformer import CausalWanTransformer


@dataclass
class ScoredBatch:
    """What the teacher and critic judge from one rollout (window-major: n windows x B streams)."""

    windows: torch.Tensor  # [B*n, C, W, h, w] latent clips (with gradient at the exit steps in a student rollout)
    text: torch.Tensor  # [B*n, L, D] the prompt each window is judged under
    # [B*n, 1, W, 1, 1] 1 where a frame is judged (None: every frame); times the streams' spatial
    # loss weights ([B*n, 1, W, h, w]) when the inputs bring them
    mask: torch.Tensor | None
    logs: dict[str, float]  # what the rollout did (options only)
    audio: torch.Tensor | None = None  # [B*n, W, M, A] the windows' audio features (avatar models)
    lead: bool = False  # every window leads with the stream's start-image latent, kept clean when noised
    video_start: torch.Tensor | None = None  # [B*n] bool: the window's frame 0 is its stream's first latent frame

    @property
    def conditions(self) -> dict:
        """Keyword conditions of the teacher / critic calls besides the text (audio for avatar models; which
        windows start their video, for models with the video-start embedding)."""
        out = {} if self.audio is None else {"audio": self.audio}
        if self.video_start is not None:
            out["video_start"] = self.video_start
        return out


@dataclass
class RolloutInputs:
    """This rank's streams of one rollout: what `run_rollout` opens and feeds them with."""

    prompts: list[str]
    new_prompts: list[str]  # each stream's prompt after a switch
    images: list | None = None  # uint8 [H, W, 3] start image per stream (None: no image start)
    audio: list | None = None  # float PCM per stream from media time 0 (avatar models)
    weights: torch.Tensor | None = None  # [B, 1, 1, h, w] per-stream loss weight of each latent pixel (avatars' mouth)


class SelfForcingDMD(Method):
    main_role = "student"
    lead_image = False  # True: every judged window leads with the stream's clean start-image latent (avatars)
    switch_prompts = 2  # prompts a switch rollout needs (a stream switches to another one)
    has_mouth = False  # True: the streams are faces whose mouth `mouth_weight` can weigh up (avatars)

    def __init__(self, gen: StreamingGenerator, teacher: CausalWanTransformer, critic: CausalWanTransformer,
                 prompts: list[str], cfg: SelfForcingStageConfig, seed: int = 0, negative_prompt: str = "",
                 images: StartImages | None = None):
        """images(i, j): uint8 [H, W, 3] start image for prompts[i], frame j < images.frames of its
        shapes clip (distill/shapes_data.py); needed when cfg.image_share > 0."""
        self.gen = gen
        self.student = gen.transformer
        self.teacher = teacher.eval().requires_grad_(False)
        self.critic = critic.train()
        self.schedule: FlowMatchSchedule = gen.schedule
        self.text = gen.text_encoder  # PromptCache
        self.prompts = prompts
        self.cfg = cfg
        self.device = gen.device
        self.rng = torch.Generator().manual_seed(seed)  # the same on every rank: draws the global batch
        self.negative_prompt = negative_prompt  # the unconditional branch of the real score's CFG
        self.last_ids: list[int] = []
        self.images = images
        if cfg.batch_size > gen.info.max_batch:
            raise ValueError(f"batch_size {cfg.batch_size} > generator max_batch {gen.info.max_batch}")
        shortest = cfg.rollout_min_chunks or cfg.rollout_chunks
        if not 0 <= shortest <= cfg.rollout_chunks or cfg.dmd_window_chunks < 0:
            raise ValueError("need 0 <= rollout_min_chunks <= rollout_chunks and dmd_window_chunks >= 0")
        if cfg.switch_share > 0 and (shortest < 2 or len(prompts) < self.switch_prompts):
            raise ValueError(f"prompt-switch rollouts need rollouts of >= 2 chunks and >= {self.switch_prompts} prompts")
        if cfg.switch_share > 0 and cfg.switch_fresh_windows and shortest < 1 + self._after_switch_chunks():
            raise ValueError(f"switch_fresh_windows needs rollouts of >= {1 + self._after_switch_chunks()} chunks "
                             "(a chunk before the switch and a whole judged window after it)")
        if cfg.image_share > 0 and images is None:
            raise ValueError("start-image rollouts need start images (self_forcing.prompts: shapes)")
        if (cfg.image_lead or cfg.image_start_window) and not self.lead_image and cfg.image_share <= 0:
            raise ValueError("self_forcing.image_lead and image_start_window shape start-image rollouts: they need image_share > 0")
        if cfg.mouth_weight > 0 and not self.has_mouth:
            raise ValueError("mouth_weight applies to avatar models only (their streams are faces with a mouth)")

    def roles(self):
        return {"student": self.student, "critic": self.critic, "teacher": self.teacher}

    def optim_specs(self):
        return {
            "student": OptimSpec(self.cfg.lr, self.cfg.betas, self.cfg.weight_decay),
            "critic": OptimSpec(self.cfg.critic_lr, self.cfg.betas, self.cfg.weight_decay),
        }

    def updates(self, step):
        return ["critic"] * self.cfg.critic_steps + ["student"]

    # ---- pieces
    def _chance(self, share: float) -> bool:
        """One draw of the shared generator: True with probability `share` (no draw when share is 0,
        so runs without the option keep their random streams)."""
        return share > 0 and torch.rand((), generator=self.rng).item() < share

    # ---- what a rollout's streams are (the avatar stage overrides these three)
    def _draw_ids(self, g: int) -> list[int]:
        """One id per stream of the global batch, from the shared generator: here a prompt index."""
        return torch.randint(0, len(self.prompts), (g,), generator=self.rng).tolist()

    def _switch_ids(self, ids: list[int]) -> list[int]:
        """The ids the global batch's streams switch to: another prompt each."""
        shift = torch.randint(1, len(self.prompts), (len(ids),), generator=self.rng).tolist()
        return [(i + s) % len(self.prompts) for i, s in zip(ids, shift)]

    def _inputs(self, ids: list[int], new_ids: list[int], image_at: list[int] | None, chunks: int) -> RolloutInputs:
        """This rank's streams: prompts (and the prompts after a switch), start images (image_at: the clip frame
        of each, None = no image), no audio."""
        images = [self.images(i, j) for i, j in zip(ids, image_at)] if image_at is not None else None
        return RolloutInputs([self.prompts[i] for i in ids], [self.prompts[i] for i in new_ids], images)

    def _after_switch_chunks(self) -> int:
        """Chunks a fresh-window switch needs after it: one judged window of `score_frames`."""
        return -(-self.cfg.score_frames // self.gen.cfg.stream.chunk_frames)

    def _window_audio(self, inputs: RolloutInputs, frames: list[list[int]]) -> torch.Tensor | None:
        """Audio features [B*n, W, M, A] of the judged windows (frames: each window's stream latent frames);
        None for a model without audio."""
        return None

    def _rollout(self, grad: bool) -> ScoredBatch:
        """Roll out this rank's B streams and cut the kept chunks into the windows to judge."""
        cfg, b = self.cfg, self.cfg.batch_size
        g = global_batch(b)
        ids = self._draw_ids(g)  # global batch
        seeds = rank_slice(torch.randint(0, 2**31 - 1, (g,), generator=self.rng).tolist(), b)
        k = self.schedule.num_student_steps
        exits = broadcast_ints(torch.randint(0, k, (cfg.rollout_chunks,), generator=self.rng).tolist())
        self.last_ids = [*rank_slice(ids, b), *seeds]
        # the options: drawn for the global batch from the shared generator, broadcast like the exits
        chunks = cfg.rollout_chunks
        if cfg.rollout_min_chunks > 0:
            chunks = int(torch.randint(cfg.rollout_min_chunks, cfg.rollout_chunks + 1, (), generator=self.rng))
        grad_from = max(0, chunks - cfg.dmd_window_chunks) if cfg.dmd_window_chunks > 0 else 0
        switch_at, transition, new_ids = -1, 0, ids
        latest = chunks - (self._after_switch_chunks() if cfg.switch_fresh_windows else 1)
        if self._chance(cfg.switch_share) and latest >= max(1, grad_from):
            switch_at = int(torch.randint(max(1, grad_from), latest + 1, (), generator=self.rng))
            transition = int(torch.randint(0, cfg.switch_transition_chunks + 1, (), generator=self.rng))
            new_ids = self._switch_ids(ids)
        image_at = None
        if self._chance(cfg.image_share):
            image_at = torch.randint(0, self.images.frames, (g,), generator=self.rng).tolist()
            if cfg.image_start_window:  # judged from the chunk after the image, no switch
                chunks, grad_from, switch_at, transition, new_ids = min(chunks, cfg.dmd_window_chunks or chunks), 0, -1, 0, ids
        chunks, switch_at, transition, has_image = broadcast_ints([chunks, switch_at, transition, image_at is not None])
        inputs = self._inputs(rank_slice(ids, b), rank_slice(new_ids, b), rank_slice(image_at, b) if has_image else None,
                              chunks)
        switch = Switch(switch_at, inputs.new_prompts, transition) if switch_at >= 0 else None
        self.student.train(grad)
        ro = run_rollout(self.gen, inputs.prompts, seeds, chunks, exit_steps=exits[:chunks], grad=grad,
                         grad_from=grad_from, switch=switch, images=inputs.images, audio=inputs.audio)
        x = ro.latents.float()  # [B, C, F, h, w]
        c = self.gen.cfg.stream.chunk_frames
        # per frame: 0 = judged under the first prompt, 1 = under the new one, -1 = context only
        labels = [int(switch is not None and grad_from + f // c >= switch.chunk) for f in range(x.shape[2])]
        first = grad_from * c + int(ro.image_latents is not None)  # the stream's latent frame index of x's frame 0
        frames = list(range(first, first + x.shape[2]))
        w, lead = cfg.score_frames, None
        leads = self.lead_image or (cfg.image_lead and ro.image_latents is not None)
        if leads:  # every window is [image | w - 1 frames]: the identity sink, clean, as the teacher learnt
            lead, w = ro.image_latents.to(x), w - 1
        elif ro.image_latents is not None and grad_from == 0:  # the start image leads the clip, as in the VAE's video
            x = torch.cat([ro.image_latents.to(x), x], dim=2)
            labels, frames = [-1, *labels], [0, *frames]
        texts = [self.text.get_batch(inputs.prompts)[0]]  # [B, L, D] per label
        if switch is not None:
            texts.append(self.text.get_batch(switch.prompts)[0])
        chosen = labelled_windows(labels, w)
        if switch is not None and cfg.switch_fresh_windows:  # the new prompt's frames alone, as a fresh clip
            k = labels.index(1)
            chosen = [(s, lab) for s, lab in chosen if lab != 1] + [(k + s, 1) for s in score_windows(len(labels) - k, w)]
        windows = torch.cat([x[:, :, s:s + w] for s, _ in chosen])  # [B*n, C, W, h, w]
        rows = [[float(lab == chosen_lab) for lab in labels[s:s + w]] for s, chosen_lab in chosen]
        held = [frames[s:s + w] for s, _ in chosen]
        if lead is not None:
            windows = torch.cat([lead.repeat(len(chosen), 1, 1, 1, 1), windows], dim=2)  # [B*n, C, 1 + W, h, w]
            rows, held = [[0.0, *r] for r in rows], [[0, *f] for f in held]
        text = torch.cat([texts[lab] for _, lab in chosen]).to(self.device).float()  # [B*n, L, D]
        mask = None
        if any(v == 0.0 for r in rows for v in r):
            mask = torch.cat([torch.tensor(r).view(1, 1, -1, 1, 1).expand(b, 1, -1, 1, 1) for r in rows]).to(self.device)
        if inputs.weights is not None:  # the same map on every window of a stream (window-major, as the windows)
            weights = inputs.weights.to(self.device).repeat(len(chosen), 1, 1, 1, 1)  # [B*n, 1, 1, h, w]
            mask = weights if mask is None else mask * weights
        logs = {}
        if cfg.rollout_min_chunks > 0:
            logs["rollout_chunks"] = float(chunks)
        if cfg.switch_share > 0:
            logs["switched"] = float(switch is not None)
        if cfg.image_share > 0:
            logs["image_start"] = float(has_image)
        start = None
        if self.student.config.video_start:  # (teacher and critic share its architecture) window-major, as the windows
            start = torch.tensor([f[0] == 0 for f in held]).repeat_interleave(b).to(self.device)  # [B*n]
        return ScoredBatch(windows, text, mask, logs, self._window_audio(inputs, held), lead=leads, video_start=start)

    def _noised(self, x: torch.Tensor, lead: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`_noise`, with the lead image of every window kept clean (sigma [B*n, F], 0 on it) when the windows
        `lead` with one; else sigma [B*n]."""
        x_t, sigma, eps = self._noise(x)
        if lead:
            sigma = lead_sigma(sigma, x.shape[2])
            x_t = torch.cat([x[:, :, :1], x_t[:, :, 1:]], dim=2)
        return x_t, sigma, eps

    def _noise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_t, sigma [B*n], eps) with sigma = shift(U[min_sigma, max_sigma]); x: this rank's windows
        [B*n, ...] (window-major), the noise drawn for the global batch's windows and sliced."""
        b = self.cfg.batch_size
        n = x.shape[0] // b
        rows = global_batch(b) * n
        u = self.cfg.min_sigma + (self.cfg.max_sigma - self.cfg.min_sigma) * torch.rand(rows, generator=self.rng)
        sigma = shift_sigma(rank_slice(u, b, groups=n), self.schedule.cfg.shift).to(self.device)
        eps = rank_slice(torch.randn((rows, *x.shape[1:]), generator=self.rng), b, groups=n).to(self.device)
        return self.schedule.add_noise(x, eps, sigma), sigma, eps

    @torch.no_grad()
    def real_x0(self, x_t: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor,
                audio: torch.Tensor | None = None, video_start: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher x0 under CFG (one batched pass over cond and uncond); `audio` is for models with audio,
        `video_start` [B] for models with the video-start embedding."""
        null = self.text.get(self.negative_prompt)[0].to(self.device).float().expand_as(text)
        t = self.schedule.timestep(sigma)
        kw = {} if video_start is None else {"video_start": torch.cat([video_start, video_start])}
        out = self.teacher(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([text, null]), **kw).float()
        cond, uncond = out.chunk(2)
        return self.schedule.x0_from_flow(x_t, cfg_flow(cond, uncond, self.cfg.guidance), sigma)

    # ---- losses
    def loss(self, role, step):
        if role == "critic":
            return self.critic_loss()
        return self.student_loss()

    def critic_loss(self):
        """DMD2 fake-score update: flow matching on a detached student rollout."""
        with torch.no_grad():
            batch = self._rollout(grad=False)
        x = batch.windows
        x_t, sigma, eps = self._noised(x, batch.lead)
        pred = self.critic(x_t, self.schedule.timestep(sigma), batch.text, **batch.conditions)
        loss = flow_matching_loss(pred, x, eps, mask=batch.mask)
        return loss, {"critic_loss": loss.item(), **batch.logs}

    def student_loss(self):
        """DMD generator loss (DMD eq. 7, normalised as eq. 8) on a rollout with gradient at the exit steps."""
        batch = self._rollout(grad=True)
        x, text = batch.windows, batch.text
        x_t, sigma, _ = self._noised(x.detach(), batch.lead)
        with torch.no_grad():
            real = self.real_x0(x_t, sigma, text, **batch.conditions)
            fake = self.critic(x_t, self.schedule.timestep(sigma), text, **batch.conditions).float()
            fake = self.schedule.x0_from_flow(x_t, fake, sigma)
        loss = dmd_generator_loss(x, real, fake, mask=batch.mask)
        gap = masked_mean((x.detach() - real).abs(), None if batch.mask is None else batch.mask > 0)  # plain, over judged frames
        return loss, {"dmd_loss": loss.item(), "real_gap": gap.item(), **batch.logs}

    def state_dict(self):
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state):
        self.rng.set_state(state["rng"])

    def sample_ids(self):
        """(prompt indices, stream seeds) of the last rollout."""
        return self.last_ids
