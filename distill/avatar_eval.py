"""`framecast eval --model AVATAR_MODEL`: lip-sync, stillness on silence and identity over time.

For an avatar model (one with an `audio` section) `framecast eval` streams, per seed, a face of the
avatar evaluation set (`AvatarDataset(EVAL_SEED).sample(seed)`: its first frame is the start image).
Its speech-like audio is fed to the stream at once, as a job would, with the look-ahead past the last
scored frame that a live session has (`heard_seconds`). Every chunk is measured as it is generated
(distill/avatar_scoring.py keeps per-frame scalars only, so a 10-minute stream never sits in memory).
`OUT/avatar_eval.json` holds, per seed and on average:
- the lip-sync correlation and its best frame offset, and the stillness ratio;
- identity per window and the worst window over the first;
- lip-sync per window (both per window averaged over the seeds: `windows`);
- the mouth's opening per loudness (`mouth_by_loudness`: how far it scatters around what the speech asks);
- the same scores of the VAE alone (`vae_ceiling`), the ceiling of the model.
Streams of several seeds are stepped together (`--max-batch`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from distill.avatar_data import AvatarDataset, synth_speech
from distill.avatar_scoring import FaceMeter, score_avatar
from distill.config import AvatarDataConfig

EVAL_SEED = 1_000_003  # faces and speech no training run draws (training seeds are small)


def is_avatar_model(model: str) -> bool:
    from models.model_dir import resolve_model

    return resolve_model(model).config.audio is not None


def eval_faces(gen_info) -> AvatarDataset:
    """The avatar evaluation set at the model's canvas, frame rate and sample rate."""
    return AvatarDataset(EVAL_SEED, AvatarDataConfig(width=gen_info.width, height=gen_info.height, fps=gen_info.fps,
                                                     sample_rate=gen_info.audio_sample_rate))


def eval_face(index: int, seconds: float, gen_info) -> tuple:
    """(start image, identity, audio float32) of evaluation face `index` at the model's canvas. A longer
    `seconds` extends the same speech (only its faint noise floor, under the silence threshold, differs)."""
    faces = eval_faces(gen_info)
    cfg = faces.config
    first = faces.sample(index, frames=1)
    rng = np.random.default_rng([EVAL_SEED, int(index), 1])
    audio = synth_speech(rng, seconds, cfg)
    return first.video[0], first.params.identity, audio


def heard_seconds(seconds: float, gen_info) -> float:
    """Seconds of speech to give a stream scored over `seconds`: its frames plus the audio look-ahead
    the last ones read (`ModelInfo.audio_lookahead_frames`), as a live session has it. Without it the
    last frames hear the speech stop where the scoring does: a word that starts there is not spoken."""
    return seconds + gen_info.audio_lookahead_frames / gen_info.fps


def mean_scores(runs: list[dict], keys) -> dict:
    """{key: mean over the runs that have a value for it (None when none has)}."""
    out = {}
    for key in keys:
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = float(np.mean(values)) if values else None
    return out


def window_means(runs: list[dict], key: str) -> list[float | None]:
    """Per window index, the mean over the runs of `key` (a per-window list; None entries are skipped)."""
    n = max((len(r[key]) for r in runs), default=0)
    out = []
    for i in range(n):
        values = [r[key][i] for r in runs if i < len(r[key]) and r[key][i] is not None]
        out.append(float(np.mean(values)) if values else None)
    return out


def mouth_means(runs: list[dict]) -> list[dict]:
    """`mouth_by_loudness` averaged over the runs, bin by bin (the sd is the mean of each face's own sd)."""
    if not runs:
        return []
    out = []
    for i, first in enumerate(runs[0]["mouth_by_loudness"]):
        cells = [r["mouth_by_loudness"][i] for r in runs]
        mean = [c["mean"] for c in cells if c["mean"] is not None]
        sd = [c["sd"] for c in cells if c["sd"] is not None]
        out.append({"lo": first["lo"], "hi": first["hi"], "frames": sum(c["frames"] for c in cells),
                    "mean": float(np.mean(mean)) if mean else None, "sd": float(np.mean(sd)) if sd else None})
    return out


def mouth_line(bins: list[dict]) -> str:
    """'silent 0.03±0.11, ≤0.25 0.25±0.25, ...' of `mouth_means`."""
    def cell(b):
        name = "silent" if b["lo"] is None else f"≤{b['hi']:g}"
        return f"{name} -" if b["mean"] is None else f"{name} {b['mean']:.2f}±{(b['sd'] or 0.0):.2f}"
    return ", ".join(cell(b) for b in bins)


def vae_ceiling(vae, seeds: list[int], seconds: float, gen_info, window_seconds: float) -> dict:
    """The VAE's ceiling: each evaluation face's ground-truth video (the frames the stream is scored
    against), encoded and decoded as a stream is (`distill.stream_reconstruction`, encoded whole) and scored
    like a generated stream against its own speech: {"identity": mean over seeds, "worst_over_first": the
    mean of each seed's worst window / first, "lip_sync": the mean best correlation, "windows_lip_sync": its mean
    per window, "mouth_by_loudness": `mouth_means`}. A VAE that cannot hold
    the face, or that blurs the mouth shut, caps every model that uses it (the ground truth scores 0.99)."""
    from distill.stream_reconstruction import streamed_reconstruction

    faces = eval_faces(gen_info)
    tc = vae.temporal_compression
    frames = 1 + tc * max(1, int(round(seconds * gen_info.fps)) // tc)
    window = max(1, int(round(window_seconds * gen_info.fps)))
    spf = gen_info.audio_sample_rate // gen_info.fps
    runs = []
    for seed in seeds:
        face = faces.sample(seed, frames=frames)
        meter = FaceMeter(face.params.identity, face.video[0])
        video = streamed_reconstruction(vae, face.video, gen_info.chunk_frames, encode_window=0)
        runs.append(score_avatar(meter.opening(video), meter.identity_scores(video), face.audio, spf, window).as_dict())
    mean = mean_scores(runs, ("identity", "identity_worst_over_first", "lip_sync"))
    return {"identity": mean["identity"], "worst_over_first": mean["identity_worst_over_first"],
            "lip_sync": mean["lip_sync"], "windows_lip_sync": window_means(runs, "windows_lip_sync"),
            "mouth_by_loudness": mouth_means(runs)}


def evaluate_avatar(gen, seeds: list[int], seconds: float, window_seconds: float = 5.0, progress=None,
                    ceiling: bool = True) -> dict:
    """Generate and score one stream per seed (batched); returns the report dict (with the VAE's
    `vae_ceiling` unless `ceiling` is false)."""
    from models.audio import float_to_pcm_s16le
    from models.stream_api import ChunkInput, Conditioning
    from distill.avatar_data import PROMPT

    info = gen.info
    frames_total = int(round(seconds * info.fps))
    runs = []
    start_time = time.perf_counter()
    for group_start in range(0, len(seeds), info.max_batch):
        group = seeds[group_start:group_start + info.max_batch]
        faces = [eval_face(s, heard_seconds(seconds, info), info) for s in group]
        meters = [FaceMeter(identity, image) for image, identity, _ in faces]
        streams = [gen.open(Conditioning(PROMPT, seed=s, image=image, inputs=("audio",))) for s, (image, _, _) in zip(group, faces)]
        openings: list[list[np.ndarray]] = [[] for _ in group]
        identities: list[list[np.ndarray]] = [[] for _ in group]
        try:
            inputs = [[ChunkInput("audio", 0, float_to_pcm_s16le(audio))] for _, _, audio in faces]
            made = 0
            while made < frames_total:
                chunks = gen.step(streams, inputs)
                inputs = [[] for _ in group]
                for i, chunk in enumerate(chunks):
                    frames = chunk.frames[:max(0, frames_total - made)]
                    openings[i].append(meters[i].opening(frames))
                    identities[i].append(meters[i].identity_scores(frames))
                made += len(chunks[0].frames)
                if progress is not None:
                    progress(len(chunks[0].frames) * len(group))
        finally:
            for s in streams:
                gen.close_stream(s)
        spf = info.audio_sample_rate // info.fps
        for i, seed in enumerate(group):
            score = score_avatar(np.concatenate(openings[i]), np.concatenate(identities[i]), faces[i][2], spf,
                                 int(round(window_seconds * info.fps)))
            runs.append({"seed": seed, **score.as_dict()})
    elapsed = time.perf_counter() - start_time
    return {
        "model": info.name, "seconds": seconds, "seeds": seeds, "window_seconds": window_seconds,
        "runs": runs,
        "mean": mean_scores(runs, ("lip_sync", "lip_sync_at_zero", "stillness", "identity", "identity_worst_over_first")),
        "offsets": [r["offset"] for r in runs],
        "windows": {"lip_sync": window_means(runs, "windows_lip_sync"), "identity": window_means(runs, "windows_identity")},
        "mouth_by_loudness": mouth_means(runs),
        "generated_fps": frames_total * len(seeds) / elapsed if elapsed > 0 else None,
        "vae": vae_ceiling(gen.vae, seeds, min(seconds, 10.0), info, window_seconds) if ceiling else None,
    }


def run_avatar(args, seeds: list[int]) -> int:
    """The `framecast eval` entry for avatar models: prints a table, writes OUT/avatar_eval.json."""
    from rich.console import Console
    from rich.table import Table

    from distill.errors import DistillError
    from models import load_generator

    try:
        gen = load_generator(args.model, device=args.device, max_batch=args.max_batch, lora=args.lora,
                             text_device=args.text_device)
    except RuntimeError as exc:
        raise DistillError(f"cannot load {args.model!r}: {exc}") from None
    teacher = None
    if args.teacher:
        teacher = _teacher_sampler(args)
    report = evaluate_avatar(gen, seeds, args.seconds, args.window_seconds)
    if teacher is not None:
        report["teacher"] = teacher_comparison(gen, teacher, seeds, args.window_seconds, args.max_batch)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "avatar_eval.json").write_text(json.dumps(report, indent=2) + "\n")
    table = Table(title=f"avatar eval: {args.model}, {args.seconds:g} s per seed")
    for col in ("seed", "lip-sync r", "offset", "r at 0", "stillness", "identity", "worst/first"):
        table.add_column(col)
    for r in report["runs"]:
        table.add_row(str(r["seed"]), f"{r['lip_sync']:.3f}", str(r["offset"]), f"{r['lip_sync_at_zero']:.3f}",
                      "-" if r["stillness"] is None else f"{r['stillness']:.3f}", f"{r['identity']:.3f}",
                      f"{r['identity_worst_over_first']:.3f}")
    Console().print(table)
    windows = report["windows"]
    print(f"per {args.window_seconds:g}-s window, mean over seeds: lip-sync "
          + " ".join("-" if v is None else f"{v:.3f}" for v in windows["lip_sync"])
          + "; identity " + " ".join(f"{v:.3f}" for v in windows["identity"]))
    vae = report["vae"]
    print(f"the VAE's ceiling (the evaluation faces encoded and decoded as a stream, up to 10 s): lip-sync "
          f"{vae['lip_sync']:.3f}, identity {vae['identity']:.3f}, worst / first window {vae['worst_over_first']:.3f}; "
          "lip-sync per window " + " ".join("-" if v is None else f"{v:.3f}" for v in vae["windows_lip_sync"]))
    print(f"mouth opening by the audio's target opening (mean±sd within a face; the ground truth scatters ~0.08): "
          f"model {mouth_line(report['mouth_by_loudness'])}; VAE {mouth_line(vae['mouth_by_loudness'])}")
    if teacher is not None:
        _print_teacher(report["teacher"])
    print(f"wrote {out / 'avatar_eval.json'}")
    return 0


def _teacher_sampler(args):
    from distill.avatar_teacher import AvatarTeacherSampler
    from distill.errors import DistillError
    from models.errors import ModelError

    if args.teacher_steps is not None and args.teacher_steps < 1:
        raise DistillError("--teacher-steps must be at least 1")
    try:
        return AvatarTeacherSampler(args.teacher, device=args.device, steps=args.teacher_steps,
                                    guidance=1.0 if args.guidance is None else args.guidance,
                                    audio_guidance=args.audio_guidance)
    except (ModelError, ValueError) as exc:
        raise DistillError(f"cannot load the teacher of {args.teacher!r}: {exc}") from None


def teacher_comparison(gen, sampler, seeds: list[int], window_seconds: float, batch_size: int) -> dict:
    """The `teacher` section of avatar_eval.json: the teacher's clips (`distill/avatar_teacher.py`) and the
    student streamed for the same frames from the same faces, and student / teacher ratios."""
    from distill.avatar_teacher import evaluate_avatar_teacher

    teacher = evaluate_avatar_teacher(sampler, gen.info, seeds, window_seconds, batch_size)
    student = evaluate_avatar(gen, seeds, teacher["frames"] / gen.info.fps, window_seconds, ceiling=False)
    student_mean = {k: student["mean"][k] for k in teacher["mean"]}

    def ratio(key):
        s, t = student_mean[key], teacher["mean"][key]
        return s / t if s is not None and t else None

    return {**teacher, "student_same_frames": {"runs": student["runs"], "mean": student_mean,
                                               "mouth_by_loudness": student["mouth_by_loudness"]},
            "student_over_teacher": {k: ratio(k) for k in ("lip_sync", "identity")}}


def _print_teacher(section: dict) -> None:
    t, s = section["mean"], section["student_same_frames"]["mean"]
    r = section["student_over_teacher"]

    def num(v):
        return "n/a" if v is None else f"{v:.3f}"

    print(f"teacher ({section['steps']} steps, guidance {section['guidance']:g}, audio guidance "
          f"{section['audio_guidance']:g}), clips of {section['frames']} frames: lip-sync {num(t['lip_sync'])}, identity "
          f"{num(t['identity'])}; the student on the same frames: lip-sync {num(s['lip_sync'])}, identity "
          f"{num(s['identity'])}; student / teacher: lip-sync {num(r['lip_sync'])}, identity {num(r['identity'])}")
    print(f"  mouth opening by loudness: teacher {mouth_line(section['mouth_by_loudness'])}; the student on the same "
          f"frames {mouth_line(section['student_same_frames']['mouth_by_loudness'])}")
    from distill.noise_capture import noise_capture_line

    print(noise_capture_line(section["noise_capture"]))
