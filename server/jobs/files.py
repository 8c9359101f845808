"""Where a job's files live under the data directory, and removing all of them.

    videos/<id>.mp4              the video (published atomically by the runner)
    videos/<id>.thumbnail.webp   variant `thumbnail`
    videos/<id>.spritesheet.jpg  variant `spritesheet`
    states/<id>.safetensors      the stream's ResumeState (models/resume.py), for extensions
    states/<id>.audio.wav        an audio job's audio on its media timeline (what its MP4's track
                                 carries, uncompressed), which its extensions continue
    uploads/<id>.<ext>           an uploaded clip an extension continues
"""

from __future__ import annotations

from pathlib import Path

# variant -> (file suffix, media type)
VARIANTS: dict[str, tuple[str, str]] = {
    "video": (".mp4", "video/mp4"),
    "thumbnail": (".thumbnail.webp", "image/webp"),
    "spritesheet": (".spritesheet.jpg", "image/jpeg"),
}


class JobFiles:
    def __init__(self, data_dir: Path):
        self.videos = data_dir / "videos"
        self.states = data_dir / "states"
        self.uploads = data_dir / "uploads"

    def variant(self, job_id: str, variant: str = "video") -> Path:
        return self.videos / f"{job_id}{VARIANTS[variant][0]}"

    def video(self, job_id: str) -> Path:
        return self.variant(job_id, "video")

    def state(self, job_id: str) -> Path:
        return self.states / f"{job_id}.safetensors"

    def audio(self, job_id: str) -> Path:
        return self.states / f"{job_id}.audio.wav"

    def upload(self, name: str) -> Path:
        return self.uploads / name

    def save_upload(self, job_id: str, raw: bytes, suffix: str = ".bin") -> str:
        """Store an uploaded file for job `job_id`; returns the name to keep in `Job.upload` (a clip)
        or `JobConditioning.files` (a medium kept by reference, e.g. suffix ".audio")."""
        self.uploads.mkdir(parents=True, exist_ok=True)
        name = f"{job_id}{suffix}"
        partial = self.uploads / (name + ".partial")
        partial.write_bytes(raw)
        partial.replace(self.uploads / name)
        return name

    def remove(self, job_id: str, *uploads: str) -> None:
        """Delete every file of the job: variants, resume state and audio, uploads (a clip, conditioning
        files), partials."""
        paths = [self.variant(job_id, v) for v in VARIANTS] + [self.state(job_id), self.audio(job_id)]
        paths += [self.upload(name) for name in uploads]
        for folder in (self.videos, self.states, self.uploads):
            if folder.is_dir():
                paths += folder.glob(f"{job_id}.*partial")
        for path in paths:
            path.unlink(missing_ok=True)
