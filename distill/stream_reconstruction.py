"""How a VAE reconstructs a long video when it is decoded as a stream is: per-window error over time.

The causal decoder's output at a frame depends on the latents of roughly the previous ten latent
frames (about 40 video frames); within that reach of the start it sees the start's zero padding, past
it only the stream. A decoder trained on clips shorter than that reach has never run in the state a
stream lives in after its first two seconds, and decodes it badly: the error of such a decoder
doubles (shapes) or triples (avatar faces) from video frame ~32 on and stays there. The 1.3-s `eval
--stages` row cannot see this; `streamed_error` can.

The latents are those a student makes: a student learns the latents of its teacher's short clips,
which the causal encoder makes near its start, so a long clip is encoded in windows of the teacher's
clip length (`distill.vae_stage.encode_in_windows`), not whole.
"""

from __future__ import annotations

import numpy as np
import torch

from models.vae import VideoVAE, frames_to_uint8, uint8_to_video


@torch.no_grad()
def streamed_reconstruction(vae: VideoVAE, video: np.ndarray, chunk_latents: int = 3, encode_window: int = 7) -> np.ndarray:
    """uint8 video `[T, H, W, 3]` (T = 1 + k * temporal compression) -> its reconstruction, same shape: encoded
    in windows of `encode_window` latent frames (the shapes teacher's clip length; 0 = whole), decoded as a
    stream is (the first latent frame alone, then `chunk_latents` at a time)."""
    from distill.vae_stage import encode_in_windows

    pixels = uint8_to_video(video[None]).to(vae.device)  # [1, 3, T, H, W]
    raw = encode_in_windows(vae, pixels, encode_window) if encode_window else vae.model.encode(pixels).latent_dist.mean
    z = vae.normalize(raw)  # [1, z, F, h, w]
    decoder = vae.streaming_decoder(1)
    pieces = [decoder.decode_chunk(z[:, :, :1])]
    pieces += [decoder.decode_chunk(z[:, :, i:i + chunk_latents]) for i in range(1, z.shape[2], chunk_latents)]
    return frames_to_uint8(torch.cat(pieces, dim=2))[0]  # [T, H, W, 3]


def window_errors(video: np.ndarray, reconstruction: np.ndarray, window_frames: int) -> np.ndarray:
    """Mean absolute error (0-255 levels) per window of `window_frames` frames, frame 0 left out (the causal
    VAE encodes it alone, as an image): `[ceil((T - 1) / window_frames)]`."""
    err = np.abs(reconstruction.astype(np.float32) - video.astype(np.float32)).mean(axis=(1, 2, 3))[1:]  # [T-1]
    return np.array([err[i:i + window_frames].mean() for i in range(0, len(err), window_frames)])


def streamed_error(vae: VideoVAE, videos: list[np.ndarray], window_frames: int, chunk_latents: int = 3,
                   encode_window: int = 7) -> dict:
    """{"windows": mean error per window over `videos`, "last_over_first": the last window's error / the
    first's}: a decoder that runs well as a stream stays near 1."""
    per_video = [window_errors(v, streamed_reconstruction(vae, v, chunk_latents, encode_window), window_frames)
                 for v in videos]
    windows = np.mean(np.stack(per_video), axis=0)
    return {"windows": [round(float(w), 3) for w in windows],
            "last_over_first": round(float(windows[-1] / max(windows[0], 1e-6)), 3)}
