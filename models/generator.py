"""The streaming generator: the one denoising loop that the server, `framecast generate`, the
benchmarks and Self-Forcing training all use.

Per chunk of `chunk_frames` latent frames, for every stream stepped together (one batched
forward per pass, each stream in its own cache row):

    noise -> K student steps (forward_stream, x0 prediction, re-noise) -> one commit pass at t=0
    that writes the clean chunk's K/V into the rolling cache -> streaming VAE decode -> uint8 frames

Streams are independent: each has its own cache row, prompt, seed (a CPU torch.Generator, so the
same seed and prompt give the same frames on any device) and VAE decoder cache.

Avatar models (an `audio` config section) also take per-chunk audio: `step(streams, inputs)` stores
each stream's `ChunkInput(kind="audio")` pieces in its `AudioBuffer`, and every chunk (and the commit
pass) reads the audio windows of its latent frames from it, silence where nothing arrived; the PCM
contract and the frame / media-time layout are in models/audio.py.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from models.audio import AudioBuffer, AudioConditioner, build_audio_encoder, media_time_to_sample, pcm_s16le_to_float
from models.config import ModelConfig
from models.kv_cache import CachePlan, RollingKVCache
from models.resume import ResumeState
from models.schedule import FlowMatchSchedule
from models.stream_api import ChunkInput, Conditioning, StreamingModel, check_prompt_switch
from models.transformer import CausalWanTransformer
from models.vae import StreamingDecoder, VideoVAE, frames_to_uint8, uint8_to_video


def start_image_latents(vae: VideoVAE, stream_cfg, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """A stream's start image uint8 [H, W, 3] (resized to the stream's size) -> (the latent of the first frame
    shown, the latent committed to the sink), each [1, C, 1, h, w] on the VAE's device: the same latent unless
    `stream_cfg.image_still_frames` > 0 (`VideoVAE.encode_still`). Distillation encodes its start images here too."""
    from PIL import Image

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    size = (stream_cfg.width, stream_cfg.height)
    resized = np.array(Image.fromarray(image).convert("RGB").resize(size, Image.BICUBIC))
    pixels = uint8_to_video(resized[None, None])[:, :, 0].to(vae.device, vae.dtype)  # [1, 3, H, W]
    latent = vae.encode_image(pixels)  # [1, C, 1, h, w]
    still = stream_cfg.image_still_frames
    return latent, (vae.encode_still(pixels, still) if still > 0 else latent)


class CapacityError(RuntimeError):
    """Every cache row is taken: no stream can be opened until one closes."""


@dataclass
class ModelInfo:
    name: str
    family: str
    width: int
    height: int
    fps: int
    chunk_frames: int  # latent frames per chunk
    chunk_video_frames: int  # video frames of every chunk after the first (the VAE's temporal stride x chunk_frames)
    steps: int  # denoising steps per chunk
    max_batch: int  # streams that can be open at once
    max_prompt_chars: int  # longest prompt a stream accepts
    device: str  # where the model runs ("cpu", "cuda:0", ...)
    inputs: tuple[str, ...] = ()  # per-chunk input kinds a stream can be fed: ("audio",) for avatar models
    supports_image: bool = False  # trained to continue a start image (any stream can start from one: VAE-encoded into the sink)
    audio_sample_rate: int = 0  # audio models: the PCM rate they take (s16le mono, models/audio.py); 0 = none
    audio_lookahead_frames: int = 0  # audio models: video frames of audio a chunk reads past its last frame
    cuts: bool = True  # a prompt switch may be a scene cut (set_prompt(cut=True)); audio models cannot


@dataclass
class Chunk:
    index: int  # 0-based chunk number within its stream
    first_frame_index: int  # video frame number of frames[0] within the stream
    frames: np.ndarray  # uint8 [T, H, W, 3]
    prompt: str  # the prompt this chunk was generated under


@dataclass
class StreamState:
    id: str
    row: int  # cache row owned by this stream
    prompt: str
    seed: int
    rng: torch.Generator  # CPU generator: all of this stream's noise
    text_states: torch.Tensor  # [1, L, text_dim] current prompt embedding
    text_kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer cross-attention K/V [1, L, H, D]
    decoder: StreamingDecoder
    chunk_index: int = 0  # index of the next chunk
    frames_emitted: int = 0
    pending_prompt: tuple[str, int, bool] | None = None  # (prompt, transition_chunks, cut) applied at the next step
    transition: list[torch.Tensor] = field(default_factory=list)  # embeddings for the next chunks
    image_latent: torch.Tensor | None = None  # [1, C, 1, h, w], decoded in front of the first chunk
    sink_latent: torch.Tensor | None = None  # [1, C, 1, h, w] the start image as committed to the sink
    prime_decoder: bool = False  # after a re-cache switch: the decoder sees the new chunk's first latent once before it
    inputs: tuple[str, ...] = ()  # per-chunk input kinds this stream is fed (its Conditioning.inputs)
    audio: AudioBuffer | None = None  # audio models: the audio received so far (silence where none)
    audio_windows: dict[int, torch.Tensor] = field(default_factory=dict)  # latent frame -> [M, A] of cached frames


class StreamingGenerator(StreamingModel):
    """The StreamingModel of every framecast model family (models/stream_api.py)."""

    def __init__(self, cfg: ModelConfig, transformer: CausalWanTransformer, vae: VideoVAE, text_encoder,
                 device: torch.device | str = "cpu", max_batch: int = 4, audio_encoder=None):
        self.cfg = cfg
        self.device = torch.device(device)
        self.transformer = transformer.eval()
        self.dtype = next(transformer.parameters()).dtype
        self.vae = vae.eval()
        self.text_encoder = text_encoder
        self.schedule = FlowMatchSchedule(cfg.schedule)
        self.cache = RollingKVCache(cfg, max_batch, device=self.device, dtype=self.dtype)
        self.free_rows = list(range(max_batch))
        self.info = ModelInfo(
            name=cfg.name, family=cfg.family, width=cfg.stream.width, height=cfg.stream.height, fps=cfg.stream.fps,
            chunk_frames=cfg.stream.chunk_frames, chunk_video_frames=vae.temporal_compression * cfg.stream.chunk_frames,
            steps=self.schedule.num_student_steps, max_batch=max_batch,
            max_prompt_chars=cfg.stream.max_prompt_chars, device=str(self.device), supports_image=cfg.supports_image,
        )
        self.audio: AudioConditioner | None = None
        if cfg.audio is not None:  # an avatar model: audio windows per latent frame (models/audio.py)
            encoder = audio_encoder or build_audio_encoder(cfg.audio, cfg.stream.fps, device=self.device)
            if encoder.dim != cfg.transformer.audio_dim:
                raise ValueError(f"audio encoder gives {encoder.dim}-d features, the transformer takes {cfg.transformer.audio_dim}")
            self.audio = AudioConditioner(cfg.audio, encoder, cfg.stream.fps, vae.temporal_compression)
            self.info.inputs = ("audio",)
            self.info.cuts = False  # the audio clock counts the cache's frames
            self.info.audio_sample_rate = cfg.audio.sample_rate
            self.info.audio_lookahead_frames = cfg.audio.lookahead_frames

    # ------------------------------------------------------------------ sizes
    def frames_in_chunk(self, index: int, has_image: bool = False) -> int:
        """Video frames in chunk `index` (the VAE turns the very first latent frame into one frame)."""
        c, tc = self.cfg.stream.chunk_frames, self.vae.temporal_compression
        if index == 0 and not has_image:
            return 1 + tc * (c - 1)
        return tc * c + (1 if index == 0 else 0)

    def _latent_shape(self, frames: int) -> tuple[int, ...]:
        return (self.cfg.transformer.in_channels, frames, self.cfg.latent_height, self.cfg.latent_width)

    # ------------------------------------------------------------------ text
    def _embed(self, prompt: str) -> torch.Tensor:
        states, _mask = self.text_encoder.get(prompt)
        return states.to(self.device, self.dtype)  # [1, L, text_dim]

    def _use_text(self, stream: StreamState, states: torch.Tensor) -> None:
        stream.text_states = states
        stream.text_kv = self.transformer.text_kv(states)

    # ------------------------------------------------------------------ stream lifecycle
    def open_stream(self, prompt: str, seed: int | None = None, image: np.ndarray | None = None) -> StreamState:
        """Shorthand for `open(Conditioning(prompt, seed, image))`."""
        return self.open(Conditioning(prompt, seed=seed, image=image))

    @torch.no_grad()
    def open(self, conditioning: Conditioning) -> StreamState:
        """A new stream conditioned on `conditioning` (models.stream_api.StreamingModel.open)."""
        unknown = [kind for kind in conditioning.inputs if kind not in self.info.inputs]
        if unknown:
            raise ValueError(f"model {self.info.name!r} takes no {', '.join(unknown)} input")
        prompt, seed, image = conditioning.prompt, conditioning.seed, conditioning.image
        if not self.free_rows:
            raise CapacityError(f"all {self.info.max_batch} stream slots are in use")
        seed = secrets.randbits(31) if seed is None else int(seed)
        row = self.free_rows.pop(0)
        self.cache.reset(row)
        states = self._embed(prompt)
        stream = StreamState(
            id=uuid.uuid4().hex, row=row, prompt=prompt, seed=seed,
            rng=torch.Generator().manual_seed(seed), text_states=states,
            text_kv=self.transformer.text_kv(states), decoder=self.vae.streaming_decoder(1),
            inputs=conditioning.inputs, audio=AudioBuffer(self.audio.cfg.sample_rate) if self.audio else None,
        )
        if image is not None:
            try:
                self._start_from_image(stream, image)
            except Exception:
                self.close_stream(stream)
                raise
        return stream

    def _start_from_image(self, stream: StreamState, image: np.ndarray) -> None:
        """Encode the reference image and commit it to the sink as a clean first frame."""
        latent, sink = start_image_latents(self.vae, self.cfg.stream, image)
        latent, sink = latent.to(self.device, self.dtype), sink.to(self.device, self.dtype)
        plan = self.cache.plan([stream.row], 1)
        self._commit(sink, [stream], plan, self._chunk_audio([stream], 1), image=True)
        stream.image_latent, stream.sink_latent = latent, sink

    def set_prompt(self, stream: StreamState, prompt: str, transition_chunks: int = 0, cut: bool = False) -> None:
        """Switch prompts from the next chunk; with transition_chunks > 0 the embedding moves
        linearly from the old prompt to the new one over that many chunks. `cut`: a scene cut, a new
        video from the next chunk on: it starts from an empty cache and a restarted VAE decoder exactly
        as a fresh stream of `prompt` would (so it is a first chunk, 1 + tc * (c - 1) frames, and a
        start image is forgotten), while chunk and frame numbering go on, so the timeline has no gap.
        A decoder that went on across the cut smeared the old scene into the new one (docs/DISTILL.md
        "Scene cuts")."""
        check_prompt_switch(self.info, transition_chunks, cut)
        stream.pending_prompt = (prompt, int(transition_chunks), bool(cut))

    def close_stream(self, stream: StreamState) -> None:
        if stream.row not in self.free_rows:
            self.cache.reset(stream.row)
            self.free_rows.append(stream.row)
            self.free_rows.sort()

    # ------------------------------------------------------------------ resuming (models/resume.py)
    @torch.no_grad()
    def snapshot(self, stream: StreamState) -> ResumeState:
        """What `resume_stream` needs to continue `stream` later, in any process (once it has
        produced a chunk). The stream itself is left untouched."""
        cache = stream.decoder._cache
        if stream.decoder.latent_frames_seen == 0:
            raise ValueError("a stream can only be snapshot after its first chunk")
        held = self.cache.cached_frames(stream.row)
        slots = [self.cache.slot_of(f) for f in held]
        state = ResumeState(
            seed=stream.seed, prompt=stream.prompt, latent_frames=self.cache.frames[stream.row],
            chunk_index=stream.chunk_index, frames_emitted=stream.frames_emitted,
            latents=self.cache.latents[stream.row][:, slots].float().cpu(),  # [C, n, h, w]
            decoder_cache=[c.detach().cpu().clone() if isinstance(c, torch.Tensor) else c for c in cache],
            rng_state=stream.rng.get_state(), image_sink=stream.sink_latent is not None and 0 in held,
        )
        if self.audio is not None:  # the cached frames' windows and the unconsumed audio, by media time
            state.audio_windows = self._held_audio_windows(stream, held).float().cpu()  # [n, M, A]
            state.audio_pcm, state.audio_start = stream.audio.samples.copy(), stream.audio.start
        return state

    @torch.no_grad()
    def resume_stream(self, prompt: str, state: ResumeState, inputs: tuple[str, ...] = ()) -> StreamState:
        """A stream that continues `state` under `prompt`: the cached frames' K/V are recomputed under
        `prompt` (the KV re-cache of a prompt switch), noise, decoding and (avatar models) the audio
        buffer go on where they stopped. `inputs`: the per-chunk input kinds the continuation is fed."""
        stream = self.open(Conditioning(prompt, seed=state.seed, inputs=inputs))
        try:
            row = stream.row
            self.cache.advance([row], state.latent_frames)
            held = self.cache.cached_frames(row)
            slots = [self.cache.slot_of(f) for f in held]
            if state.latents.shape[1] != len(slots):
                raise ValueError(f"resume state holds {state.latents.shape[1]} latent frames, the cache {len(slots)}")
            self.cache.latents[row][:, slots] = state.latents.to(self.device, self.dtype)
            if state.image_sink:  # frame 0 is the start image: the re-cache keeps it clean
                stream.sink_latent = state.latents[:, :1].unsqueeze(0).to(self.device, self.dtype)  # [1, C, 1, h, w]
            if self.audio is not None and len(state.audio_windows):
                if len(state.audio_windows) != len(held):
                    raise ValueError(f"resume state holds {len(state.audio_windows)} audio windows for {len(held)} frames")
                stream.audio_windows = {int(f): w.to(self.device, self.dtype) for f, w in zip(held, state.audio_windows)}
            if self.audio is not None:
                stream.audio.start, stream.audio.samples = state.audio_start, np.asarray(state.audio_pcm, np.float32).copy()
            stream.rng.set_state(state.rng_state)  # before the re-cache: under context noise it draws from it
            self._recache(stream)
            stream.decoder._cache = [c.to(self.vae.device, self.vae.dtype) if isinstance(c, torch.Tensor) else c
                                     for c in state.decoder_cache]
            stream.decoder.latent_frames_seen = state.latent_frames
            stream.prime_decoder = prompt != state.prompt  # as a live switch to another prompt primes it
            stream.chunk_index, stream.frames_emitted = state.chunk_index, state.frames_emitted
        except Exception:
            self.close_stream(stream)
            raise
        return stream

    @torch.no_grad()
    def context_state(self, frames: np.ndarray, seed: int, prompt: str = "") -> ResumeState:
        """A ResumeState for a video made elsewhere, uint8 `[T, H, W, 3]` at the model's size and fps:
        its last frames (up to the cache's sink + window latent frames) are VAE-encoded as the clean
        cached frames and warm the decoder; the continuation's noise comes from `seed`."""
        if frames.ndim != 4 or frames.shape[1:] != (self.info.height, self.info.width, 3) or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames [T, {self.info.height}, {self.info.width}, 3], got "
                             f"{frames.dtype} {frames.shape}")
        tc = self.vae.temporal_compression
        emitted = len(frames)
        if len(frames) < 1 + tc:  # one latent frame would leave the decoder mid-start: lead in with a still
            frames = np.concatenate([np.repeat(frames[:1], 1 + tc - len(frames), axis=0), frames])
        n = min(self.cache.slots, 1 + (len(frames) - 1) // tc)  # latent frames of context
        clip = frames[len(frames) - (1 + tc * (n - 1)):]  # [1 + tc (n-1), H, W, 3]
        latents = self.vae.encode(uint8_to_video(clip[None]).to(self.vae.device, self.vae.dtype))  # [1, C, n, h, w]
        decoder = self.vae.streaming_decoder(1)
        decoder.decode_chunk(latents)  # fills its causal cache; the frames themselves are the caller's
        return ResumeState(
            seed=seed, prompt=prompt, latent_frames=n, chunk_index=0, frames_emitted=emitted,
            latents=latents[0].float().cpu(), decoder_cache=[c.cpu() if isinstance(c, torch.Tensor) else c for c in decoder._cache],
            rng_state=torch.Generator().manual_seed(seed).get_state(),
        )

    # ------------------------------------------------------------------ prompt switching
    def _apply_pending_prompt(self, stream: StreamState) -> None:
        if stream.pending_prompt is not None:
            prompt, transition, cut = stream.pending_prompt
            stream.pending_prompt = None
            new = self._embed(prompt)
            changed, stream.prompt = prompt != stream.prompt, prompt
            if transition == 0:
                stream.transition = []
                self._use_text(stream, new)
                if cut:  # a new video from here: an empty cache (no start image either) and a restarted decoder
                    self.cache.reset(stream.row)
                    stream.image_latent = stream.sink_latent = None
                    stream.decoder = self.vae.streaming_decoder(1)
                elif changed and self.cfg.stream.recache_frames:
                    self._recommit_recent(stream, self.cfg.stream.recache_frames)
                else:
                    self._recache(stream)
                # a re-cache to the prompt it has changes nothing on screen: the decoder goes on unprimed
                stream.prime_decoder = not cut and changed and stream.decoder.latent_frames_seen > 0
            else:
                old = stream.text_states
                stream.transition = [torch.lerp(old, new, (j + 1) / transition) for j in range(transition)]
        if stream.transition:
            self._use_text(stream, stream.transition.pop(0))

    @torch.no_grad()
    def _recache(self, stream: StreamState) -> None:
        """Recompute the cached frames' K/V under the current prompt (LongLive's KV re-cache): the
        held frames are replayed oldest first, chunk by chunk, each seeing only those before it."""
        held = self.cache.cached_frames(stream.row)
        c = self.cfg.stream.chunk_frames
        for start in range(0, len(held), c):
            frames = held[start:start + c]
            plan = self.cache.replay_plan(stream.row, frames, upto=start)
            slots = plan.write_slots[0]
            latents = self.cache.latents[stream.row][:, slots].unsqueeze(0)  # [1, C, n, h, w]
            image = torch.tensor([[f == 0 and stream.sink_latent is not None for f in frames]])  # [1, n]
            latents, t = self._context_input(latents, [stream], image)
            audio = None
            if self.audio is not None:  # the windows the frames were made with
                audio = self._held_audio_windows(stream, frames)[None]  # [1, n, M, A]
            self.transformer.forward_stream(latents, t, stream.text_kv, self.cache, plan, write=True, audio=audio)

    @torch.no_grad()
    def _recommit_recent(self, stream: StreamState, n: int) -> None:
        """A re-cache switch that keeps only the `n` most recent held frames (`stream.recache_frames`): they are
        committed afresh under the current prompt as the row's first frames (its new sink), mid-video; older
        frames, a start image among them, are forgotten. With `n` or fewer frames held, the plain re-cache."""
        held = self.cache.cached_frames(stream.row)
        if len(held) <= n:
            return self._recache(stream)
        slots = [self.cache.slot_of(f) for f in held[-n:]]
        x0 = self.cache.latents[stream.row][:, slots].unsqueeze(0).clone()  # [1, C, n, h, w]
        self.cache.reset(stream.row, starts_video=False)
        stream.image_latent = stream.sink_latent = None
        c = self.cfg.stream.chunk_frames
        for start in range(0, n, c):  # chunk by chunk, each seeing those before it, as they were made
            piece = x0[:, :, start:start + c]
            self._commit(piece, [stream], self.cache.plan([stream.row], piece.shape[2]))

    # ------------------------------------------------------------------ the loop
    def _noise(self, streams: list[StreamState], frames: int) -> torch.Tensor:
        shape = self._latent_shape(frames)
        noise = torch.stack([torch.randn(shape, generator=s.rng) for s in streams])  # [B, C, c, h, w]
        return noise.to(self.device, self.dtype)

    def _batched_text_kv(self, streams: list[StreamState]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if len(streams) == 1:
            return streams[0].text_kv
        return [
            (torch.cat([s.text_kv[i][0] for s in streams]), torch.cat([s.text_kv[i][1] for s in streams]))
            for i in range(len(self.transformer.blocks))
        ]

    # ------------------------------------------------------------------ audio (avatar models)
    def audio_until_us(self, stream: StreamState) -> int:
        """Media time (µs) up to which the stream's next chunk reads audio (0 for a model without audio):
        a server steps the chunk once audio up to here has arrived, or when the chunk is due
        (StreamingModel.audio_until_us)."""
        if self.audio is None:
            return 0
        return self.audio.until_us(self.cache.frames[stream.row], self.cfg.stream.chunk_frames)

    def _held_audio_windows(self, stream: StreamState, frames: Sequence[int]) -> torch.Tensor:
        """The audio windows [n, M, A] the given cached latent frames were made with (silence for a
        frame made without audio, e.g. one encoded from a clip)."""
        silence = self.audio.silence().to(self.device, self.dtype)
        return torch.stack([stream.audio_windows.get(int(f), silence) for f in frames])

    def _feed(self, stream: StreamState, piece: ChunkInput) -> None:
        """Store one audio piece in the stream's buffer (the contract: models/audio.py)."""
        if not isinstance(piece.data, (bytes, bytearray, memoryview)):
            raise ValueError("audio input data must be bytes of s16le PCM")
        first = media_time_to_sample(piece.media_time_us, self.audio.cfg.sample_rate)
        stream.audio.write(first, pcm_s16le_to_float(bytes(piece.data)))

    def _chunk_audio(self, streams: list[StreamState], n: int) -> torch.Tensor | None:
        """Audio windows [B, n, M, A] of each stream's next n latent frames, read from its buffer (silence
        where nothing arrived); kept per latent frame for a later KV re-cache; consumed audio is trimmed."""
        if self.audio is None:
            return None
        spf = self.audio.samples_per_frame
        out = []
        for s in streams:
            latent_first = self.cache.frames[s.row]
            enc_first, end = self.audio.encode_span(*self.audio.span(latent_first, n))
            pcm = torch.from_numpy(s.audio.read(enc_first * spf, end * spf))[None]  # [1, S]
            windows = self.audio.windows(pcm, enc_first, latent_first, n)[0].to(self.device, self.dtype)  # [n, M, A]
            held = set(self.cache.cached_frames(s.row)) | set(range(latent_first, latent_first + n))
            s.audio_windows = {f: w for f, w in s.audio_windows.items() if f in held}
            s.audio_windows.update({latent_first + j: windows[j] for j in range(n)})
            next_first, _ = self.audio.encode_span(*self.audio.span(latent_first + n, 1))
            s.audio.trim(max(0, next_first) * spf)
            out.append(windows)
        return torch.stack(out)

    def _context_input(self, x0: torch.Tensor, streams: list[StreamState], clean: torch.Tensor | None = None):
        """What the commit pass sees of clean latents `x0 [B, C, n, h, w]`: (latents, timesteps [B, n]).
        With `stream.context_noise` s > 0 each frame is noised to sigma s from its stream's own generator, except
        where `clean [B, n]` (bool) is set (a start image); else x0 at t=0."""
        sigma = self.cfg.stream.context_noise
        t = torch.zeros(x0.shape[0], x0.shape[2], device=self.device)
        if sigma <= 0:
            return x0, t
        keep = torch.zeros_like(t, dtype=torch.bool) if clean is None else clean.to(self.device)
        s = torch.where(keep, 0.0, sigma)  # [B, n]
        noisy = self.schedule.add_noise(x0.float(), self._noise(streams, x0.shape[2]).float(), s).to(x0.dtype)
        return noisy, torch.where(keep, 0.0, float(self.schedule.timestep(sigma)))

    def _commit(self, x0: torch.Tensor, streams: list[StreamState], plan: CachePlan,
                audio: torch.Tensor | None = None, image: bool = False) -> None:
        """The pass that writes the chunk's K/V (and its clean latents) into the cache: at t=0, or noised to
        `stream.context_noise` (a start image, `image`, always clean)."""
        clean = torch.ones(x0.shape[0], x0.shape[2], dtype=torch.bool) if image else None
        x, t = self._context_input(x0, streams, clean)
        self.transformer.forward_stream(x, t, self._batched_text_kv(streams), self.cache, plan, write=True, audio=audio)
        self.cache.write_latents(plan, x0)
        self.cache.advance([s.row for s in streams], x0.shape[2])

    def denoise(self, streams: list[StreamState], plan: CachePlan, text_kv, exit_step: int | None = None,
                grad: bool = False, audio: torch.Tensor | None = None) -> torch.Tensor:
        """The few-step student sampler for one chunk of each stream: clean latents [B, C, c, h, w].

        exit_step: stop after step k and return its x0 prediction (Self-Forcing's random exit;
        None = all steps). grad: keep gradients through the exit step's forward only. audio: the
        chunk's windows [B, c, M, A] (avatar models).
        """
        c = self.cfg.stream.chunk_frames
        sigmas = self.schedule.student_sigmas()
        last = len(sigmas) - 1 if exit_step is None else exit_step
        x = self._noise(streams, c)
        for k in range(last + 1):
            with torch.set_grad_enabled(grad and k == last):
                t = torch.full((len(streams), c), float(self.schedule.timestep(sigmas[k])), device=self.device)
                flow = self.transformer.forward_stream(x, t, text_kv, self.cache, plan, write=False, audio=audio)
                if k == last:
                    return self.schedule.x0_from_flow(x.float(), flow.float(), sigmas[k])
            noise = self._noise(streams, c)
            x = self.schedule.student_step(x.float(), flow.float(), k, noise.float()).to(self.dtype)
        raise AssertionError("unreachable")

    def rollout_chunk(self, streams: list[StreamState], exit_step: int | None = None, grad: bool = False) -> torch.Tensor:
        """Generate and commit one chunk of latents per stream [B, C, c, h, w] (no decoding).

        This is `step` without the VAE: Self-Forcing training rolls out through it, so training
        sees exactly the cache, sink, rolling window and prompt handling of inference.
        """
        if len({s.row for s in streams}) != len(streams):
            raise ValueError("a stream was listed twice")
        with torch.no_grad():
            for s in streams:
                self._apply_pending_prompt(s)
        plan = self.cache.plan([s.row for s in streams], self.cfg.stream.chunk_frames)
        with torch.no_grad():
            audio = self._chunk_audio(streams, self.cfg.stream.chunk_frames)  # [B, c, M, A] or None
        if grad:  # the text states: each block recomputes its K/V, so the cross-attention projections get gradients too
            text_kv = torch.cat([s.text_states for s in streams])  # [B, L, text_dim]
        else:
            text_kv = self._batched_text_kv(streams)
        x0 = self.denoise(streams, plan, text_kv, exit_step=exit_step, grad=grad, audio=audio)
        with torch.no_grad():
            self._commit(x0.detach().to(self.dtype), streams, plan, audio)
        return x0

    @torch.no_grad()
    def step(self, streams: Sequence[StreamState], inputs: Sequence[Sequence[ChunkInput]] | None = None) -> list[Chunk]:
        """Advance each stream by one chunk, batched; returns their chunks in order.

        inputs[i]: the per-chunk inputs that arrived for stream i since its previous chunk, each of
        a kind the stream declared (a stray input is an error rather than silently dropped). Audio
        pieces go into the stream's buffer first (models/audio.py: s16le mono at
        `info.audio_sample_rate`, placed by media time; missing audio is silence)."""
        if inputs is not None:
            if len(inputs) != len(streams):
                raise ValueError(f"{len(inputs)} input lists for {len(streams)} streams")
            for stream, pieces in zip(streams, inputs):
                for piece in pieces:
                    if piece.kind not in stream.inputs:
                        raise ValueError(f"stream {stream.id} did not declare a {piece.kind!r} input")
            for stream, pieces in zip(streams, inputs):
                for piece in pieces:
                    self._feed(stream, piece)
        if not streams:
            return []
        x0 = self.rollout_chunk(streams)
        videos = self.decode(streams, x0)
        return [self._chunk(s, frames_to_uint8(v)[0]) for s, v in zip(streams, videos)]

    def decode(self, streams: list[StreamState], x0: torch.Tensor) -> list[torch.Tensor]:
        """Each stream's clean chunk latents `x0[i]` -> its video `[1, 3, T, H, W]`, through its own
        streaming decoder (a pending reference image leads its first chunk); one batched VAE pass for
        all streams past their first chunk. After a re-cache switch the decoder first decodes the new
        chunk's first latent frame and drops those frames: its causal cache then holds the new scene, so
        the change is one clean frame boundary instead of the old scene smeared into the new chunk's first
        frames (a colour flash over two chunks: docs/DISTILL.md "Scene cuts"). A cut restarts the decoder."""
        latents = []
        for i, stream in enumerate(streams):
            z = x0[i:i + 1].to(self.vae.device, self.vae.dtype)  # [1, C, c, h, w]
            if stream.prime_decoder:
                stream.decoder.decode_chunk(z[:, :, :1])
                stream.prime_decoder = False
            if stream.image_latent is not None:
                z = torch.cat([stream.image_latent.to(z.device, z.dtype), z], dim=2)
                stream.image_latent = None
            latents.append(z)
        return StreamingDecoder.decode_together([s.decoder for s in streams], latents)

    @staticmethod
    def _chunk(stream: StreamState, frames: np.ndarray) -> Chunk:
        """The stream's next Chunk of uint8 frames `[T, H, W, 3]`."""
        chunk = Chunk(index=stream.chunk_index, first_frame_index=stream.frames_emitted, frames=frames, prompt=stream.prompt)
        stream.chunk_index += 1
        stream.frames_emitted += frames.shape[0]
        return chunk

    def stream(self, prompt: str, seed: int | None = None, image: np.ndarray | None = None) -> Iterator[Chunk]:
        """One stream as an endless iterator of chunks (its cache row is freed when the iterator is)."""
        state = self.open_stream(prompt, seed=seed, image=image)
        try:
            while True:
                yield self.step([state])[0]
        finally:
            self.close_stream(state)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_generator(model: str = "shapes", device: str | torch.device | None = None, max_batch: int = 4,
                   dtype: torch.dtype | None = None, attn: str | None = None, lora=(),
                   text_device: str | torch.device | None = None) -> StreamingGenerator:
    """A StreamingGenerator for a model directory or preset name (see models/model_dir.py).

    device defaults to the first GPU, else the CPU; dtype to bf16 on GPU and fp32 on CPU (umT5 runs
    in the same dtype); attn forces an attention backend (kernels.BACKENDS; None: $FRAMECAST_ATTN,
    else auto). lora: `LoraSpec`s or "FILE[:SCALE]" strings merged into the transformer.
    text_device: where the text encoder runs (default: device), e.g. "cpu" to keep umT5-XXL's
    ~11 GB off the GPU; its prompt cache applies either way.
    """
    import kernels

    if attn is not None:
        kernels.dispatch.requested_backend(attn)  # an unknown name fails here, not mid-stream
    from models.model_dir import load_transformer, load_vae, resolve_model
    from models.text_encoders import build_text_encoder

    device = torch.device(device) if device is not None else default_device()
    text_device = torch.device(text_device) if text_device is not None else device
    if "cuda" in (device.type, text_device.type) and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but no GPU is available")
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    source = resolve_model(model)
    transformer = load_transformer(source, device=device, dtype=dtype, lora=lora)
    transformer.attn_backend = attn
    vae = load_vae(source, device=device)
    text = build_text_encoder(source.config.text_encoder, source.path, text_device, dtype=dtype)
    audio = None
    if source.config.audio is not None:
        from models.audio import build_audio_encoder

        audio = build_audio_encoder(source.config.audio, source.config.stream.fps, source.path, device)
    return StreamingGenerator(source.config, transformer, vae, text, device=device, max_batch=max_batch,
                              audio_encoder=audio)
