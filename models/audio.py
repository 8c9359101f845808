"""Audio input of avatar models: the PCM contract, audio encoders, and a stream's audio buffer.

The contract (defined here once; docs/PROTOCOL.md and docs/ARCHITECTURE.md repeat it):

- A model with an `audio` config section declares `ModelInfo.inputs == ("audio",)`,
  `ModelInfo.audio_sample_rate` (e.g. 16000) and `ModelInfo.audio_lookahead_frames`.
- A stream opened with `Conditioning(..., inputs=("audio",))` is fed, through
  `StreamingGenerator.step(streams, inputs)`, pieces `ChunkInput(kind="audio", media_time_us, data)`:
  `data` is PCM **signed 16-bit little-endian, mono, at `audio_sample_rate`** (`PCM_FORMAT`);
  `media_time_us` is the media time of the piece's first sample, in µs since the stream started.
- Media time 0 is video frame 0 (the start image's frame when the stream starts from an image).
  Video frame n is shown at n / fps seconds and its audio is samples
  [n * sr / fps, (n + 1) * sr / fps) (sr is a multiple of the fps).
- Latent frame f covers video frames tc*f - tc + 1 .. tc*f (tc: the VAE's temporal compression) and
  reads audio features of those frames plus `context_frames` before and `lookahead_frames` after.
  So a chunk reads audio up to `StreamingGenerator.audio_until_us(stream)` (the end of its last
  video frame plus the look-ahead); a server steps the chunk once that much audio has arrived or
  when the chunk is due, whichever comes first.
- Audio that has not arrived when a chunk is made is silence (zeros): the stream never waits.
  Pieces may arrive in any order and split anywhere; a later piece overwrites samples it
  overlaps; samples for media time the stream has already consumed are dropped.

Encoders turn PCM into one feature vector per video frame (`AudioEncoder.features`):
`MelEncoder` (log-mel filterbank, no weights: the shapes-avatar family) and `Wav2Vec2Encoder`
(transformers' `Wav2Vec2Model` from a local folder: Wan-scale avatar models, as MultiTalk and
OmniAvatar use). `AudioConditioner` cuts the per-frame features into the per-latent-frame windows
[F, M, A] the transformer's audio adapter reads.
"""

from __future__ import annotations

import abc
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.config import AudioConfig

PCM_FORMAT = "pcm_s16le"  # what ChunkInput(kind="audio").data holds: s16le mono at the model's sample rate
MAX_AHEAD_SECONDS = 900.0  # a piece starting further ahead of what a stream has consumed is refused


def pcm_s16le_to_float(data: bytes) -> np.ndarray:
    """s16le bytes -> float32 samples in [-1, 1)."""
    if len(data) % 2:
        raise ValueError(f"s16le PCM needs an even number of bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm_s16le(samples: np.ndarray) -> bytes:
    """float samples in [-1, 1] -> s16le bytes (clipped)."""
    return (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 32767 / 32768) * 32768.0).round().astype("<i2").tobytes()


def media_time_to_sample(media_time_us: int, sample_rate: int) -> int:
    return int(round(media_time_us * sample_rate / 1_000_000))


# ---------------------------------------------------------------------------------------------
# encoders: PCM [B, S] -> one feature per video frame [B, S // samples_per_frame, dim]
# ---------------------------------------------------------------------------------------------

class AudioEncoder(abc.ABC):
    sample_rate: int
    samples_per_frame: int
    dim: int

    @abc.abstractmethod
    def features(self, pcm: torch.Tensor) -> torch.Tensor:
        """float PCM [B, S] (S a multiple of samples_per_frame) -> features [B, S / samples_per_frame, dim]."""


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 50.0) -> torch.Tensor:
    """Triangular filters equally spaced on the HTK mel scale (mel = 2595 log10(1 + f / 700)): [n_freqs, n_mels]."""
    def mel(f):
        return 2595.0 * math.log10(1.0 + f / 700.0)

    edges_mel = torch.linspace(mel(f_min), mel(sample_rate / 2), n_mels + 2, dtype=torch.float64)
    edges = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)  # [n_mels + 2] Hz
    freqs = torch.linspace(0.0, sample_rate / 2, n_freqs, dtype=torch.float64)[:, None]  # [n_freqs, 1]
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


class MelEncoder(AudioEncoder):
    """Log-mel features computed inside each video frame: the frame's samples are cut into
    `sub_frames` Hann-windowed pieces, each gives an `n_mels` log-mel spectrum; the feature is their
    concatenation [sub_frames * n_mels]. Frames are independent (no look across frame edges), so a
    frame's feature is the same whether encoded alone (streaming) or in a clip (training).
    Scaled so silence is 0: 1 + log10(energy + 1e-5) / 5."""

    def __init__(self, sample_rate: int, fps: int, n_mels: int, sub_frames: int):
        self.sample_rate, self.samples_per_frame = sample_rate, sample_rate // fps
        if self.samples_per_frame % sub_frames:
            raise ValueError(f"{self.samples_per_frame} samples per frame do not split into {sub_frames} sub-frames")
        self.piece = self.samples_per_frame // sub_frames
        self.n_fft = 1 << (self.piece - 1).bit_length()
        self.window = torch.hann_window(self.piece, periodic=False)
        self.bank = mel_filterbank(self.n_fft // 2 + 1, n_mels, sample_rate)  # [n_freqs, n_mels]
        self.dim = n_mels * sub_frames

    def features(self, pcm: torch.Tensor) -> torch.Tensor:
        b, s = pcm.shape
        pieces = pcm.float().reshape(b, s // self.piece, self.piece) * self.window.to(pcm.device)  # [B, P, piece]
        power = torch.fft.rfft(pieces, n=self.n_fft).abs().pow(2)  # [B, P, n_freqs]
        mel = power @ self.bank.to(pcm.device)  # [B, P, n_mels]
        feats = 1.0 + torch.log10(mel + 1e-5) / 5.0
        return feats.reshape(b, s // self.samples_per_frame, self.dim)  # [B, frames, sub * n_mels]


class Wav2Vec2Encoder(AudioEncoder):
    """transformers' `Wav2Vec2Model` from a local folder (config.json + weights; never downloaded):
    the last hidden states (50 per second at 16 kHz) linearly resampled to the video frame rate.
    The input is normalised to zero mean and unit variance per clip, as Wav2Vec2FeatureExtractor does."""

    def __init__(self, folder: str | Path, fps: int, device: torch.device | str = "cpu"):
        from transformers import Wav2Vec2Model

        folder = Path(folder)
        if not (folder / "config.json").exists():
            raise FileNotFoundError(f"wav2vec2 audio encoder: no config.json in {folder}")
        self.model = Wav2Vec2Model.from_pretrained(folder, local_files_only=True).eval().requires_grad_(False).to(device)
        self.sample_rate = 16000  # wav2vec2 models are trained at 16 kHz
        self.samples_per_frame = self.sample_rate // fps
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def features(self, pcm: torch.Tensor) -> torch.Tensor:
        frames = pcm.shape[1] // self.samples_per_frame
        x = pcm.float()
        x = (x - x.mean(1, keepdim=True)) / (x.var(1, keepdim=True) + 1e-7).sqrt()
        device = next(self.model.parameters()).device
        hidden = self.model(x.to(device)).last_hidden_state  # [B, L, dim] at ~50 Hz
        return F.interpolate(hidden.transpose(1, 2), size=frames, mode="linear", align_corners=False).transpose(1, 2)


def build_audio_encoder(cfg: AudioConfig, fps: int, model_dir: str | Path | None = None,
                        device: torch.device | str = "cpu") -> AudioEncoder:
    if cfg.encoder == "mel":
        return MelEncoder(cfg.sample_rate, fps, cfg.n_mels, cfg.mel_sub_frames)
    if cfg.encoder == "wav2vec2":
        folder = Path(cfg.path)
        if not folder.is_absolute():
            if model_dir is None:
                raise ValueError("the wav2vec2 audio encoder needs a model directory (its folder is relative to it)")
            folder = Path(model_dir) / folder
        encoder = Wav2Vec2Encoder(folder, fps, device)
        if cfg.sample_rate != encoder.sample_rate:
            raise ValueError(f"wav2vec2 takes {encoder.sample_rate} Hz audio, the config says {cfg.sample_rate}")
        return encoder
    raise ValueError(f"unknown audio encoder {cfg.encoder!r}; choose mel or wav2vec2")


# ---------------------------------------------------------------------------------------------
# windows per latent frame
# ---------------------------------------------------------------------------------------------

class AudioConditioner:
    """Per-latent-frame audio windows [F, M, A] from PCM (see the module docstring for the frame layout)."""

    def __init__(self, cfg: AudioConfig, encoder: AudioEncoder, fps: int, temporal_compression: int):
        self.cfg, self.encoder, self.fps, self.tc = cfg, encoder, fps, temporal_compression
        self.samples_per_frame = cfg.sample_rate // fps
        if encoder.samples_per_frame != self.samples_per_frame:
            raise ValueError("the audio encoder's frame length does not match the model's fps")
        self.window = cfg.window(temporal_compression)
        self.dim = encoder.dim

    def span(self, latent_first: int, n: int) -> tuple[int, int]:
        """Video frames [first, end) whose features latent frames latent_first .. latent_first + n - 1 read."""
        first = self.tc * latent_first - self.tc + 1 - self.cfg.context_frames
        end = self.tc * (latent_first + n - 1) + 1 + self.cfg.lookahead_frames
        return first, end

    def until_us(self, latent_first: int, n: int) -> int:
        """Media time (µs) up to which audio is read for those latent frames."""
        return (self.span(latent_first, n)[1] * 1_000_000) // self.fps

    def encode_span(self, first: int, end: int) -> tuple[int, int]:
        """Video frames [first - encoder context, end) of PCM the encoder is given for the span."""
        return first - self.cfg.encoder_context_frames, end

    def windows(self, pcm: torch.Tensor, pcm_first_frame: int, latent_first: int, n: int) -> torch.Tensor:
        """pcm [B, S] float, its first sample at the start of video frame `pcm_first_frame` ->
        windows [B, n, M, A] of latent frames latent_first ...; samples outside the pcm are silence."""
        first, end = self.span(latent_first, n)
        enc_first, _ = self.encode_span(first, end)
        spf = self.samples_per_frame
        lo, hi = (enc_first - pcm_first_frame) * spf, (end - pcm_first_frame) * spf
        seg = pcm[:, max(lo, 0):max(min(hi, pcm.shape[1]), 0)].float()
        left = min(max(0, -lo), hi - lo)
        seg = F.pad(seg, (left, hi - lo - left - seg.shape[1]))  # [B, (end - enc_first) * spf]
        feats = self.encoder.features(seg)[:, first - enc_first:]  # [B, end - first, A]
        idx = (torch.arange(n)[:, None] * self.tc + torch.arange(self.window)[None]).to(feats.device)  # [n, M]
        return feats[:, idx]  # [B, n, M, A]

    def silence(self) -> torch.Tensor:
        """The window of a latent frame with no audio [M, A]."""
        return self.windows(torch.zeros(1, 0), 0, 0, 1)[0, 0]


class AudioBuffer:
    """A stream's received audio: float samples at absolute sample indices (sample 0 = media time 0),
    zeros where nothing arrived; the part the stream has consumed is trimmed."""

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate
        self.start = 0  # absolute index of samples[0]; everything before it is consumed
        self.samples = np.zeros(0, dtype=np.float32)

    @property
    def end(self) -> int:
        """One past the last sample received (absolute index)."""
        return self.start + len(self.samples)

    def write(self, first: int, samples: np.ndarray) -> None:
        """Store `samples` from absolute index `first` (later writes win; consumed media time is dropped)."""
        if first - self.start > MAX_AHEAD_SECONDS * self.sample_rate:
            raise ValueError(f"audio piece starts {(first - self.start) / self.sample_rate:.0f} s ahead of the stream "
                             f"(limit {MAX_AHEAD_SECONDS:.0f} s)")
        skip = max(0, self.start - first)
        samples = samples[skip:]
        first += skip
        if len(samples) == 0:
            return
        end = first + len(samples)
        if end > self.end:
            self.samples = np.concatenate([self.samples, np.zeros(end - self.end, dtype=np.float32)])
        self.samples[first - self.start:end - self.start] = samples

    def read(self, first: int, end: int) -> np.ndarray:
        """Samples [first, end) as float32, zeros where none arrived."""
        out = np.zeros(max(0, end - first), dtype=np.float32)
        lo, hi = max(first, self.start), min(end, self.end)
        if hi > lo:
            out[lo - first:hi - first] = self.samples[lo - self.start:hi - self.start]
        return out

    def trim(self, before: int) -> None:
        """Forget samples before absolute index `before`."""
        if before > self.start:
            self.samples = self.samples[min(before - self.start, len(self.samples)):]
            self.start = before
