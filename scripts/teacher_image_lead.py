"""Does a shapes teacher follow a clean start image? `python scripts/teacher_image_lead.py MODEL TEACHER_DIR LATENTS`

For the last 16 clips of a teacher's latent dataset (`WORK/teacher/latents.pt`), sample 6 latent frames two ways
with the teacher of TEACHER_DIR (Euler, 32 steps at the schedule's teacher shift, CFG 4, the same noise):
[the clip's latent frame 0 held clean at sigma 0 | 5 frames], and all 6 frames from the prompt alone. Both are
decoded by MODEL's VAE; printed: the mean |pixel error| (0-255) of video frames 1-4 (the first latent after the
image) and of frames 5-20 against the clip's own decoded frames, and of frames 0-12 (what a stream's first chunk
shows) against the decoded image, as `framecast eval --image-start` measures a student.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from distill.ode_pairs import cfg_model_fn, lead_held
from models import load_generator
from models.schedule import FlowMatchSchedule
from models.transformer import CausalWanTransformer
from models.vae import frames_to_uint8

CLIPS = 16
STEPS = 32
GUIDANCE = 4.0


@torch.no_grad()
def sample(teacher, schedule, noise, text, null, lead: torch.Tensor | None) -> torch.Tensor:
    """[B, C, F, h, w] latents of the teacher's ODE under CFG (`FlowMatchSchedule.sample`); with `lead`
    [B, C, 1, h, w], the model sees frame 0 as that clean image at timestep 0 throughout (as
    `avatar_stages.image_led_flow` does for faces)."""
    model_fn = cfg_model_fn(teacher, text, null)
    if lead is not None:
        model_fn = lead_held(model_fn, lead)
    sigmas = schedule.teacher_sigmas(STEPS, schedule.cfg.teacher_shift)
    x = schedule.sample(model_fn, noise, sigmas, guidance=GUIDANCE, per_frame_timesteps=lead is not None)
    if lead is not None:
        x[:, :, :1] = lead
    return x


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="model directory (its VAE and text encoder)")
    p.add_argument("teacher", type=Path, help="model directory whose teacher/ is sampled")
    p.add_argument("latents", type=Path, help="the teacher stage's latents.pt")
    args = p.parse_args()
    torch.set_num_threads(1)
    gen = load_generator(args.model, device="cpu", max_batch=1)
    vae = gen.vae.float().eval()
    teacher = CausalWanTransformer.from_pretrained(args.teacher / "teacher").float().eval()
    schedule = FlowMatchSchedule(gen.cfg.schedule)
    data = torch.load(args.latents, weights_only=False)
    clips = data["latents"][-CLIPS:, :, :6].float()  # [16, C, 6, h, w]
    text = data["text"][-CLIPS:].float()  # [16, L, D]
    null = gen.text_encoder.get("")[0].float()  # [1, L, D]
    noise = torch.randn(clips.shape, generator=torch.Generator().manual_seed(0))

    def video(latents):  # [B, T, H, W, 3] float 0-255
        with torch.no_grad():
            return torch.from_numpy(frames_to_uint8(vae.decode(latents))).float()

    truth = video(clips)
    led = video(sample(teacher, schedule, noise, text, null, clips[:, :, :1]))
    plain = video(sample(teacher, schedule, noise, text, null, None))
    for name, frames in (("frames 1-4", slice(1, 5)), ("frames 5-20", slice(5, 21))):
        print(f"{name}: image-led {(led[:, frames] - truth[:, frames]).abs().mean():.2f}, "
              f"prompt only {(plain[:, frames] - truth[:, frames]).abs().mean():.2f}")
    # the image-start eval's measure for the teacher: a stream's first chunk (the image + 12 frames) against the image
    image, chunk = truth[:, :1], slice(0, 13)
    print(f"frames 0-12 against the image: image-led {(led[:, chunk] - image).abs().mean():.2f}, "
          f"the clip itself {(truth[:, chunk] - image).abs().mean():.2f}")


if __name__ == "__main__":
    main()
