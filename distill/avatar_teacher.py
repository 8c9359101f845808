"""`framecast eval --model AVATAR --teacher DIR`: the avatar teacher scored beside its student.

Where does an avatar student lose lip-sync and identity: in the teacher it was distilled from, or in
the distillation? The teacher is bidirectional and was trained on clips of the start image and one
cache window (`sink_frames + window_frames` latent frames; `configs/shapes-avatar.yaml`
`teacher.train_frames`), so it is sampled at that length: for each evaluation face (the same faces,
speech and start images as `distill/avatar_eval.py`), latent frame 0 is the encoded start image held
clean and the frames after it are integrated from noise along the teacher's ODE with the face's speech
(`image_led_flow`: the flow the ODE pairs were made with, text guidance `s_t` and audio guidance `s_a`).
The decoded clip is measured with the same scorer as a stream (`distill/avatar_scoring.py`), and the
student is streamed for the same frames, so the two are compared on equal footing.
"""

from __future__ import annotations

import numpy as np
import torch

from distill.avatar_eval import eval_face, heard_seconds, mean_scores, mouth_means
from distill.avatar_scoring import FaceMeter, score_avatar
from distill.teacher_sampler import TeacherSampler
from models.vae import frames_to_uint8, uint8_to_video


class AvatarTeacherSampler(TeacherSampler):
    """Image-led, audio-driven clips `[T, H, W, 3]` uint8 from a model directory's `teacher/` transformer
    (loaded as `TeacherSampler` loads it; `guidance` is the text scale s_t, `audio_guidance` s_a)."""

    def __init__(self, model: str, device: str | torch.device | None = None, steps: int | None = None,
                 guidance: float = 1.0, audio_guidance: float = 1.0):
        from distill.avatar_stages import conditioner

        super().__init__(model, device=device, steps=steps, guidance=guidance)
        if self.cfg.audio is None:
            raise ValueError(f"{model!r} takes no audio: its teacher is not an avatar teacher")
        self.audio = conditioner(self.cfg, self.vae.temporal_compression)
        self.audio_guidance = audio_guidance
        stream = self.cfg.stream
        self.clip_latent_frames = stream.sink_frames + stream.window_frames  # the teacher's clip: image + one window
        self.frames = self.vae.num_video_frames(self.clip_latent_frames)

    @torch.no_grad()
    def sample(self, images: list[np.ndarray], audio: list[np.ndarray], prompt: str, seeds: list[int]) -> list[np.ndarray]:
        """One clip per (start image uint8 [H, W, 3], speech float [S] from media time 0, seed), sampled
        together: list of `[frames, H, W, 3]` uint8, frame 0 the decoded start image."""
        from distill.avatar_stages import image_led_flow

        f = self.clip_latent_frames
        pixels = uint8_to_video(np.stack(images)[:, None])[:, :, 0].to(self.device)  # [B, 3, H, W]
        image = self.vae.encode_image(pixels).float()  # [B, C, 1, h, w] the first frame shown
        lead = self.vae.encode_start_image(pixels, self.cfg.stream.image_still_frames).float()  # as a stream commits it
        c, _, h, w = image.shape[1:]
        noise = torch.stack([torch.randn((c, f, h, w), generator=torch.Generator().manual_seed(s)) for s in seeds])
        pcm = torch.from_numpy(np.stack(audio))  # [B, S]
        windows = self.audio.windows(pcm, 0, 0, f).to(self.device, self.dtype)  # [B, F, M, A]
        text = self.text.get_batch([prompt] * len(seeds))[0].to(self.device, self.dtype)  # [B, L, D]
        null = self.text.get("")[0].to(self.device, self.dtype) if self.guidance != 1.0 else None  # [1, L, D]
        flow = image_led_flow(self.teacher, lead.to(self.dtype), text, windows, null, self.guidance, self.audio_guidance)
        latents = self.schedule.sample(lambda x, t: flow(x.to(self.dtype), t), noise.to(self.device),
                                       self.schedule.teacher_sigmas(self.steps), per_frame_timesteps=True)
        latents[:, :, :1] = image
        return list(frames_to_uint8(self.vae.decode(latents.float())))  # [B][T, H, W, 3]


@torch.no_grad()
def avatar_noise_capture(sampler: AvatarTeacherSampler, gen_info, seeds: list[int]) -> list[dict]:
    """`distill.noise_capture` of the teacher's conditional flow v(c, a) on the evaluation faces' ground truth:
    each face's first `sampler.frames` frames encoded, led by its start image as a stream commits it."""
    from distill.avatar_data import PROMPT
    from distill.avatar_eval import eval_faces
    from distill.noise_capture import noise_capture

    faces = eval_faces(gen_info)
    samples = [faces.sample(s, frames=sampler.frames) for s in seeds]
    video = uint8_to_video(np.stack([x.video for x in samples])).to(sampler.device)  # [B, 3, T, H, W]
    x0 = sampler.vae.encode(video).float()  # [B, C, F, h, w]
    x0[:, :, :1] = sampler.vae.encode_start_image(video[:, :, 0], sampler.cfg.stream.image_still_frames).float()
    f = sampler.clip_latent_frames
    audio = sampler.audio.windows(torch.from_numpy(np.stack([x.audio for x in samples])), 0, 0, f).to(sampler.device, sampler.dtype)
    text = sampler.text.get_batch([PROMPT] * len(seeds))[0].to(sampler.device, sampler.dtype)  # [B, L, D]

    def flow(x_t, t):
        return sampler.teacher(x_t.to(sampler.dtype), t, text, audio=audio)

    return noise_capture(flow, sampler.schedule, x0, lead_frames=1)


def evaluate_avatar_teacher(sampler: AvatarTeacherSampler, gen_info, seeds: list[int], window_seconds: float,
                            batch_size: int = 4) -> dict:
    """Score the teacher's clips of the evaluation faces `seeds` (module docstring); returns the report dict."""
    from distill.avatar_data import PROMPT

    seconds = sampler.frames / gen_info.fps
    spf = gen_info.audio_sample_rate // gen_info.fps
    runs = []
    for start in range(0, len(seeds), batch_size):
        group = seeds[start:start + batch_size]
        faces = [eval_face(s, heard_seconds(seconds, gen_info), gen_info) for s in group]
        clips = sampler.sample([image for image, _, _ in faces], [audio for _, _, audio in faces], PROMPT, group)
        for seed, (image, identity, audio), clip in zip(group, faces, clips):
            meter = FaceMeter(identity, image)
            score = score_avatar(meter.opening(clip), meter.identity_scores(clip), audio, spf,
                                 int(round(window_seconds * gen_info.fps)))
            runs.append({"seed": seed, **score.as_dict()})

    return {
        "steps": sampler.steps, "guidance": sampler.guidance, "audio_guidance": sampler.audio_guidance,
        "latent_frames": sampler.clip_latent_frames, "frames": sampler.frames, "seconds": seconds, "runs": runs,
        "mean": mean_scores(runs, ("lip_sync", "lip_sync_at_zero", "stillness", "identity")),
        "mouth_by_loudness": mouth_means(runs),
        "noise_capture": avatar_noise_capture(sampler, gen_info, seeds),
    }
