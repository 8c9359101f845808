"""The VAE decoded as a stream: per-window error over time (distill/stream_reconstruction.py)."""

import numpy as np
import pytest

from distill.stage_quality import ground_truth_clips
from distill.stream_reconstruction import streamed_error, streamed_reconstruction, window_errors
from models.model_dir import load_vae, resolve_model
from models.vae import VideoVAE, frames_to_uint8, uint8_to_video


def test_window_errors_leave_out_frame_zero_and_average_each_window():
    video = np.zeros((9, 4, 4, 3), np.uint8)
    recon = video.copy()
    recon[0] = 200  # frame 0 is the causal VAE's image: not counted
    recon[1:5] = 10
    recon[5:9] = 30
    assert window_errors(video, recon, 4).tolist() == [10.0, 30.0]
    assert window_errors(video, recon, 3).tolist() == pytest.approx([10.0, (10 + 30 + 30) / 3, 30.0])


def test_a_streamed_reconstruction_equals_the_whole_decode():
    import torch

    vae = VideoVAE.from_config(resolve_model("tiny").config.vae).eval()
    clip = ground_truth_clips(["a red circle bouncing quickly on a black background"], [0], 17, 32, 32, 16)[0]
    with torch.no_grad():
        whole = frames_to_uint8(vae.decode(vae.encode(uint8_to_video(clip[None]))))[0]
    streamed = streamed_reconstruction(vae, clip, chunk_latents=2, encode_window=0)
    assert streamed.shape == clip.shape
    assert np.abs(streamed.astype(int) - whole.astype(int)).max() <= 1


@pytest.mark.slow
def test_the_shipped_shapes_decoder_holds_its_quality_over_a_streamed_clip():
    """A decoder trained only on clips shorter than its causal reach doubles its error past video frame ~32
    (measured on the 2026-11-28 afternoon decoder: 2-s windows 4.6, 7.3, 7.6 levels): the shipped one must not."""
    source = resolve_model("shapes")
    vae = load_vae(source).eval()
    prompts = ["a large red circle bouncing quickly on a black background",
               "two small yellow squares drifting slowly across gray"]
    clips = ground_truth_clips(prompts, [0], 97, 64, 64, 16)  # 6 s
    result = streamed_error(vae, clips, window_frames=32)
    assert len(result["windows"]) == 3
    assert result["last_over_first"] < 1.3, result
