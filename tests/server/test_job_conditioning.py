"""A job record's conditioning: its JSON form, decoding into the model's Conditioning, and the
SQLite migration of databases whose jobs stored prompt, seed and image as separate columns."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from server.jobs.conditioning import JobConditioning
from server.jobs.files import JobFiles
from server.jobs.sqlite_store import SqliteJobStore
from server.jobs.store import Job

# The jobs table as framecast first wrote it (before the extension columns and `conditioning`).
FIRST_SCHEMA = """
CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, prompt TEXT NOT NULL,
    seconds REAL NOT NULL, model TEXT NOT NULL, seed INTEGER, image BLOB, status TEXT NOT NULL,
    progress INTEGER NOT NULL, created_at INTEGER NOT NULL, completed_at INTEGER, error TEXT,
    attempts INTEGER NOT NULL, size TEXT NOT NULL);
CREATE INDEX jobs_status ON jobs (status, seq);
"""
PNG = b"\x89PNG\r\n\x1a\n\x00\xff\xfe"  # not UTF-8: media must survive JSON as bytes


def test_json_round_trip_keeps_bytes_and_inputs():
    c = JobConditioning("a red ball", seed=7, media={"image": PNG}, files={"audio": "video_x.audio"}, inputs=("audio",))
    assert JobConditioning.from_json(c.to_json()) == c
    assert JobConditioning.from_json(JobConditioning("x").to_json()) == JobConditioning("x")


def test_decode_reads_inline_and_file_media(tmp_path):
    image = np.zeros((4, 4, 3), np.uint8)
    files = JobFiles(tmp_path)
    seen = []
    decoders = {"image": lambda raw: seen.append(raw) or image}
    inline = JobConditioning("p", seed=3, media={"image": PNG}, inputs=("audio",))
    got = inline.decode(decoders, files.upload)
    assert seen == [PNG] and got.image is image and (got.prompt, got.seed, got.inputs) == ("p", 3, ("audio",))
    job = Job(id="video_x", seconds=1.0, model="m", upload="video_x.bin",
              conditioning=JobConditioning("p", files={"image": files.save_upload("video_x", PNG[::-1], ".image")}))
    assert job.conditioning.decode(decoders, lambda name: files.upload(name).read_bytes()).image is image
    assert seen[-1] == PNG[::-1]  # the file's bytes
    with pytest.raises(ValueError, match="audio"):
        JobConditioning("p", media={"audio": b"RIFF"}).decode(decoders, files.upload)
    assert job.uploads() == ["video_x.bin", "video_x.image"]
    files.remove(job.id, *job.uploads())  # deleting a job removes its conditioning's files too
    assert not files.upload("video_x.image").exists()


def test_sqlite_rows_of_the_first_schema_are_migrated(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(FIRST_SCHEMA)
    rows = [("video_a", "a red ball", 2.0, "shapes", 11, PNG, "completed", 100, 1, 2, None, 1, "64x64"),
            ("video_b", "a blue square", 1.0, "shapes", None, None, "queued", 0, 3, None, None, 0, "64x64")]
    db.executemany("INSERT INTO jobs (id, prompt, seconds, model, seed, image, status, progress, created_at,"
                   " completed_at, error, attempts, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.commit()
    db.close()

    store = SqliteJobStore(path)
    a, b = store.get("video_a"), store.get("video_b")
    assert a.conditioning == JobConditioning("a red ball", seed=11, media={"image": PNG})
    assert (a.status, a.completed_at, a.seconds, a.source_seconds) == ("completed", 2, 2.0, 0.0)
    assert b.conditioning == JobConditioning("a blue square") and b.extends_video_id is None
    assert store.claim_next().id == "video_b"  # the queue order (seq) survived
    store.close()
    columns = {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(jobs)")}
    assert "conditioning" in columns and not columns & {"prompt", "seed", "image"}
    assert SqliteJobStore(path).get("video_a") == a  # reopening a migrated database changes nothing
