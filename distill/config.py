"""Every setting of `framecast distill`, with its default, in one place (YAML files only override).

A recipe (configs/shapes.yaml, configs/wan2.1-1.3b.yaml) names a model preset or a local model
folder, overrides model fields, and sets one `StageConfig` per stage. Each stage stops at
`max_steps` optimizer steps or `max_minutes` of wall time, whichever comes first, so a recipe
can be sized for a machine.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.parallel import ParallelConfig
from models.config import ModelConfig, apply_overrides, merge, preset

STAGES = ("vae", "vae-decoder", "teacher", "ode-pairs", "ode-init", "self-forcing")


@dataclass
class ShapesDataConfig:
    """Procedural shapes videos: resolution, length and how many objects a sample holds."""

    width: int = 64
    height: int = 64
    frames: int = 17  # video frames per sample (1 + 4k suits the VAE's causal first frame)
    fps: int = 16
    min_objects: int = 1
    max_objects: int = 3
    rotation: bool = True  # squares and triangles spin slowly
    omit_size_prob: float = 0.3  # chance a prompt leaves an object's size unsaid


@dataclass
class AvatarDataConfig:
    """Procedural talking faces (distill/avatar_data.py): canvas, length and the speech-like audio."""

    width: int = 64
    height: int = 64
    frames: int = 17  # video frames per sample
    fps: int = 16
    sample_rate: int = 16000
    lead_silence: tuple[float, float] = (0.3, 0.6)  # seconds of silence before the first syllable
    pause: tuple[float, float] = (0.3, 1.2)  # seconds of a pause between phrases
    phrase_syllables: tuple[int, int] = (2, 8)  # syllables per phrase
    head_motion: float = 1.2  # idle head motion amplitude in pixels
    blink_every: tuple[float, float] = (1.5, 4.0)  # seconds between blinks


@dataclass
class EvalConfig:
    """`framecast eval`: what is generated and how it is windowed and weighted."""

    prompts: str = "configs/prompts/shapes_eval.txt"
    seconds: float = 20.0  # video length per prompt and seed
    seeds: tuple[int, ...] = (0, 1)
    window_seconds: float = 5.0  # scores are reported per window (drift over long streams)
    out_dir: str = "eval_out"
    max_batch: int = 4  # streams generated together in one batched step
    switch_at: int = 0  # switch report: streams switch to the next prompt before this chunk (0 = no report)
    switch_within: int = 2  # switch report: chunks after the switch that are scored against the new prompt
    transition_chunks: int = 0  # switch report: the switch's embedding blend (0 = a KV re-cache at once)
    # component -> weight of the overall score (normalised by their sum)
    weights: dict[str, float] = field(default_factory=lambda: {
        "background": 0.15, "colours": 0.2, "shapes": 0.15, "count": 0.15,
        "motion": 0.15, "flicker": 0.1, "saturation": 0.1,
    })


@dataclass
class StageConfig:
    """Optimisation and budget of one stage (fields a stage does not use are ignored by it)."""

    max_steps: int = 1000  # optimizer steps of the stage's main role (the student in self-forcing)
    max_minutes: float = 0.0  # wall-time budget (0 = none); the stage saves and stops when it is spent
    batch_size: int = 8
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max gradient norm (0 = off)
    warmup_steps: int = 0  # linear lr warm-up
    cooldown: float = 0.0  # share of the budget (steps or minutes, whichever ends first) over which lr decays linearly to 0
    ema_decay: float = 0.0  # EMA of the main role's weights (0 = off)
    ckpt_every: int = 200  # optimizer steps between resumable checkpoints
    log_every: int = 10  # optimizer steps between JSONL log lines


@dataclass
class VAEStageConfig(StageConfig):
    """`vae`: reconstruction L1 + MSE + kl_weight * KL on random crops of shapes videos."""

    max_steps: int = 2000
    lr: float = 1e-3
    batch_size: int = 8
    clip_frames: int = 9  # video frames per training clip (1 + 4k)
    crop: int = 32  # square spatial crop (the VAE is convolutional; 0 = full frame)
    kl_weight: float = 1e-3  # on the mean KL per latent element
    sample_posterior: bool = False  # decode a posterior sample (a VAE) or its mean (an autoencoder, converges faster)
    object_weight: float = 4.0  # extra reconstruction weight on pixels unlike the frame's background (median colour)
    motion_weight: float = 0.0  # extra weight on pixels unlike their own median over the clip (what moves: a mouth)
    first_frame_weight: float = 1.0  # weight of video frame 0 (coded alone, like a start image) against the others
    mse_weight: float = 1.0
    stats_clips: int = 32  # clips encoded to measure the per-channel latent mean / std


@dataclass
class VAEDecoderStageConfig(VAEStageConfig):
    """`vae-decoder`: the decoder alone (encoder frozen, so the latent space and its statistics stay)
    fine-tuned on longer clips, where the causal decoder cache runs in its steady state as when streaming."""

    max_steps: int = 0  # 0 = skip the stage
    beside_teacher: bool = False  # `distill all`: run in a second process while the teacher trains (it only needs the encoder)
    batch_size: int = 2
    # 21 latent frames: the causal decoder reaches ~10 latent frames back, and one trained only within that
    # reach of a clip's start decodes a stream worse past its first 2 s (distill/stream_reconstruction.py)
    clip_frames: int = 81
    crop: int = 32
    # share of clips that cut to another video at a random latent frame, as a stream's latents do at a
    # prompt switch (the server's session.update): a decoder never trained on a cut turns the chunks
    # after it into a flash of colour while its causal cache still holds the old scene
    cut_share: float = 0.0
    cut_after: int = 3  # latent frames before a cut, at least: a stream switches at a chunk boundary, never
    #                     right after its first latent frame (a start image's, which must decode into its chunk)
    # latent frames per encoder pass (0 = the whole clip; None = the teacher's clip_latent_frames): the teacher's
    # clips are encoded whole and short, so the latents a student makes are those of an encoder near its start;
    # a long clip encoded whole has others past frame ~32 (`vae_stage.encode_in_windows`)
    encode_window: int | None = None
    # latent noise augmentation: each clip's latents get Gaussian noise of a level drawn from U(0, latent_noise)
    # channel stds, the target staying the clean video, so the decoder renders a generator's slightly-off latents
    # smoothly instead of as speckle (`DecoderFinetuneMethod.perturb`; 0 = off)
    latent_noise: float = 0.0


@dataclass
class TeacherStageConfig(StageConfig):
    """`teacher`: flow matching of the bidirectional DiT on VAE latents with text dropout."""

    max_steps: int = 3000
    lr: float = 5e-4
    batch_size: int = 16
    weight_decay: float = 0.01
    warmup_steps: int = 50
    ema_decay: float = 0.999
    num_clips: int = 512  # shapes videos encoded once into the latent dataset
    clip_latent_frames: int = 9  # latent frames per encoded video
    train_frames: int = 6  # latent frames per training crop (the teacher's clip length)
    text_dropout: float = 0.1  # chance a sample's prompt is replaced by "" (for CFG)
    # the shift of the training sigmas, sigma = shift(u), u ~ U(0, 1) (0 = schedule.shift, the student's):
    # a small latent needs less noise than Wan's to hide its content (SD3's resolution-dependent shift)
    shift: float = 0.0
    # shapes: this share of the crops leads with the clip's latent frame 0 (the code of a start image) kept clean,
    # so the teacher learns to follow a start image and self_forcing.image_lead can judge image starts with it
    image_lead_share: float = 0.0
    # True: an image-led crop continues its image at once (the clip's latent frames 1, 2, ...), as a stream's first
    # chunk and its sink do; False: from anywhere after it, so at the frame after the image the teacher cannot
    # tell whether the clip went on from it or moved on, and draws a blend of both (more motion than either)
    image_lead_adjacent: bool = False
    # shapes: the flow-matching error on the latent pixels an object touches (distill/latents.latent_object_masks)
    # weighs 1 + this, the weighted mean sum(w e^2) / sum(w) (0 = the plain MSE): the objects are a few percent of
    # the latent pixels, and all of what the eval's colours, shapes and count judge
    object_weight: float = 0.0
    object_weight_min_sigma: float = 0.0  # weigh the objects only in samples noised at sigma >= this (0 = all)
    # False: image-led crops keep the plain MSE (only text crops weigh their objects), so the background's share of
    # the loss, which decides how closely a stream keeps its start image, stays what it was on the led crops
    object_weight_led: bool = True
    audio_dropout: float = 0.1  # avatar models: chance a sample's audio layers are skipped (the null audio of audio CFG)
    # avatar models: the flow-matching error on each face's mouth box (as self_forcing.mouth_weight) weighs
    # 1 + this (0 = the plain MSE)
    mouth_weight: float = 0.0
    # a model directory whose teacher/ starts the run instead of random weights (fine-tuning a trained
    # teacher; a checkpoint in the work dir, with --resume, still wins). "" = random init. A teacher with fewer
    # layers than the recipe's (overrides: {transformer: {num_layers: N}}) is deepened with identity blocks first
    # (distill/grow.py), so a plateaued teacher continues with more capacity
    init_from: str = ""
    encode_batch: int = 16


@dataclass
class ODEPairsConfig:
    """`ode-pairs`: teacher trajectories (many steps, CFG) kept at the student's sigmas."""

    num_pairs: int = 256
    batch_size: int = 16
    frames: int = 6  # latent frames per trajectory (the teacher's clip length)
    steps: int = 0  # teacher sampler steps (0 = schedule.teacher_steps)
    guidance: float = 0.0  # CFG scale uncond + g * (cond - uncond) (0 = schedule.guidance_scale)
    audio_guidance: float = 1.0  # avatar models: audio CFG scale s_a (distill/avatar_stages.py `guided_flow`; 1 = plain conditional)
    shift: float = 0.0  # sigma shift of the teacher grid (0 = schedule.teacher_shift)
    solver: str = "euler"
    prompts: str = "shapes"  # "shapes" (sampled from the dataset) or a prompt file, one per line
    image_lead_share: float = 0.0  # shapes: share of batches led by their prompt's clip frame as a clean start image
    max_minutes: float = 0.0  # stop early (keeping what was sampled) when spent


@dataclass
class ODEInitStageConfig(StageConfig):
    """`ode-init`: CausVid's regression of the block-causal student onto the ODE pairs."""

    max_steps: int = 1000
    lr: float = 2e-4
    batch_size: int = 16
    ema_decay: float = 0.0


@dataclass
class LoraTrainConfig:
    """LoRA fine-tuning (Hu et al. 2021): only low-rank adapters `(alpha / rank) * B @ A` on the
    target linears train, the base weights stay bit-identical; the adapter is saved PEFT-style."""

    rank: int = 0  # adapter rank r (0 = off: every weight trains)
    alpha: float = 0.0  # scaling alpha / r (0 = alpha equals the rank: scale 1)
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0", "net.0.proj", "net.2")  # linear-name suffixes (PEFT target_modules)
    critic: bool = True  # the critic (fake score) trains adapters too (False: all its weights train)


@dataclass
class SelfForcingStageConfig(StageConfig):
    """`self-forcing`: rollouts through the streaming generator + DMD (generator) / flow matching (critic)."""

    max_steps: int = 600  # generator steps
    lr: float = 2e-6  # generator learning rate (published 1.3B figure)
    critic_lr: float = 4e-7
    betas: tuple[float, float] = (0.0, 0.999)
    batch_size: int = 4  # streams per rollout
    ema_decay: float = 0.99
    critic_steps: int = 5  # critic updates per generator update
    rollout_chunks: int = 7  # chunks per rollout (21 latent frames at chunk 3), longer than the cache
    score_frames: int = 21  # frames the teacher / critic judge at once (windows tiling the rollout)
    guidance: float = 4.0  # real score: uncond + g * (cond - uncond) (= cond + 3 (cond - uncond))
    audio_guidance: float = 1.0  # avatar models: the real score's audio CFG scale s_a (avatar_stages.py `guided_flow`)
    # avatar models: the DMD and critic losses weigh the latent pixels of each face's mouth box
    # (avatar_data.mouth_box: the open mouth at rest plus the head motion) 1 + this; the box is ~14 % of
    # the latent pixels at 64x64 and all of the lip-sync (0 = uniform, the plain DMD loss)
    mouth_weight: float = 0.0
    min_sigma: float = 0.02  # DMD / critic noise levels are drawn in [min_sigma, max_sigma]
    max_sigma: float = 0.98
    prompts: str = "shapes"  # "shapes" or a prompt file (every line is used)
    shapes_prompts: int = 4096  # distinct prompts drawn from the shapes dataset when prompts = "shapes"
    real_score: str | None = None  # transformer folder of the real score (e.g. Wan2.1-T2V-14B); None = the teacher
    lora: LoraTrainConfig = field(default_factory=LoraTrainConfig)  # rank > 0: train adapters only, saved to out/lora/
    # long rollouts (Self-Forcing++ / Rolling Forcing / LongLive streaming tuning): only the last
    # `dmd_window_chunks` chunks of a rollout get gradient and are scored; the chunks before them
    # run without gradient and with every step, exactly as when serving, so the cache the window
    # starts from is the one a stream that old meets, and memory stays flat in rollout_chunks
    dmd_window_chunks: int = 0  # 0 = every chunk (the plain Self-Forcing rollout)
    rollout_min_chunks: int = 0  # > 0: each rollout's length is drawn uniformly in [this, rollout_chunks]
    # prompt switches (LongLive): in this share of rollouts every stream switches to another prompt at
    # a random chunk inside the scored chunks, through StreamingGenerator.set_prompt as the server
    # does; frames from the switch on are scored under the new prompt
    switch_share: float = 0.0
    switch_transition_chunks: int = 0  # each switch blends embeddings over U{0..this} chunks (0: KV re-cache)
    # True: the frames after a switch are judged in windows of their own, without the frames before it
    # as context, as a fresh clip of the new prompt (the bidirectional teacher never saw a scene change,
    # so with the old frames in its window its score asks for their continuation); the switch is then
    # drawn so a whole window follows it
    switch_fresh_windows: bool = False
    # start images: in this share of rollouts every stream starts from a frame of its prompt's shapes
    # clip, opened as `stream(image=...)` opens it (needs prompts = "shapes"); a stage run with
    # image_share > 0 marks the model `supports_image` in framecast.json
    image_share: float = 0.0
    # True: an image-started rollout's windows are judged as [start image, clean | window], as the avatar's are,
    # by a teacher trained on image-led clips (teacher.image_lead_share > 0); False: the image leads only the
    # first window, noised with it (the teacher never saw it clean, so its score follows the prompt alone)
    image_lead: bool = False
    # True: an image rollout is judged from its first chunk (it lasts dmd_window_chunks chunks, or its drawn length
    # when that is shorter, all of them with gradient, and does not switch), so the chunk right after the image,
    # where a served image start is seen, is always trained; False: image rollouts are drawn like the others, and
    # with long rollouts their first chunk is mostly burn-in
    image_start_window: bool = False


@dataclass
class DistillConfig:
    """A whole recipe."""

    model: str = "shapes-untrained"  # preset the architecture starts from
    model_dir: str | None = None  # a local diffusers Wan folder: teacher, VAE and text encoder come from it
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # ModelConfig sections, e.g. {"stream": {...}}
    name: str = "shapes"  # name written into framecast.json
    work_dir: str = "runs/shapes"  # resumable checkpoints, logs, latent dataset, ODE pairs
    out: str = "checkpoints/shapes"  # the model directory the stages write
    seed: int = 0
    device: str = "cpu"
    negative_prompt: str = ""  # the unconditional branch of CFG (ode-pairs, the real score); Wan uses its negative prompt
    parallel: ParallelConfig = field(default_factory=ParallelConfig)  # FSDP2 settings (torchrun only)
    threads: int = 0  # torch CPU threads (0 = torch's default)
    data: ShapesDataConfig = field(default_factory=ShapesDataConfig)
    avatar: AvatarDataConfig = field(default_factory=AvatarDataConfig)  # the data of models with audio (avatars)
    vae_from: str | None = None  # a model directory whose trained VAE the `vae` stage copies instead of training one
    vae_init: str | None = None  # a model directory whose VAE (same architecture) the `vae` stage starts from and fine-tunes
    vae: VAEStageConfig = field(default_factory=VAEStageConfig)
    vae_decoder: VAEDecoderStageConfig = field(default_factory=VAEDecoderStageConfig)
    teacher: TeacherStageConfig = field(default_factory=TeacherStageConfig)
    ode_pairs: ODEPairsConfig = field(default_factory=ODEPairsConfig)
    ode_init: ODEInitStageConfig = field(default_factory=ODEInitStageConfig)
    self_forcing: SelfForcingStageConfig = field(default_factory=SelfForcingStageConfig)

    def model_config(self) -> ModelConfig:
        """The student's ModelConfig: the preset (or the model folder's config) plus `overrides`."""
        if self.model_dir is not None:
            from models.model_dir import resolve_model

            base = resolve_model(self.model_dir).config
        else:
            base = preset(self.model)
        cfg = apply_overrides(base, self.overrides) if self.overrides else base
        return dataclasses.replace(cfg, name=self.name)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> DistillConfig:
    """Defaults <- YAML file <- `overrides` (same nesting as the YAML)."""
    import yaml

    cfg = DistillConfig()
    if path is not None:
        values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
        cfg = merge(cfg, values)
    if overrides:
        cfg = merge(cfg, overrides)
    return cfg
