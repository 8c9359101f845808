"""JobStore on an embedded SQLite database (stdlib sqlite3, WAL) in the data directory."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from pathlib import Path

from server.jobs.conditioning import JobConditioning
from server.jobs.store import Job, JobStore, job_from_record, job_record

_COLUMNS = [f.name for f in dataclasses.fields(Job)]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- insertion order (pagination, claim order)
    id TEXT UNIQUE NOT NULL,
    conditioning TEXT NOT NULL,  -- JobConditioning.to_json(): prompt, seed, media, inputs
    seconds REAL NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    progress INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    completed_at INTEGER,
    error TEXT,
    attempts INTEGER NOT NULL,
    size TEXT NOT NULL,
    remixed_from_video_id TEXT,
    extends_video_id TEXT,
    upload TEXT,
    source_seconds REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
"""
_ADDED_COLUMNS = {"remixed_from_video_id": "TEXT", "extends_video_id": "TEXT", "upload": "TEXT",
                  "source_seconds": "REAL NOT NULL DEFAULT 0"}  # columns added after the first schema
_LEGACY_CONDITIONING = ("prompt", "seed", "image")  # the first schema's columns for what `conditioning` holds
_UPDATABLE = {"status", "progress", "error", "completed_at"}


class SqliteJobStore(JobStore):
    """One connection guarded by a lock; every write is its own transaction."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Databases written by an older framecast lack the newer Job fields: add them, and merge the
        first schema's prompt, seed and image columns into `conditioning` (one transaction)."""
        have = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, decl in _ADDED_COLUMNS.items():
            if name not in have:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")
        if "prompt" not in have:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if "conditioning" not in have:
                self._db.execute("ALTER TABLE jobs ADD COLUMN conditioning TEXT")
            rows = self._db.execute(f"SELECT seq, {', '.join(_LEGACY_CONDITIONING)} FROM jobs").fetchall()
            for row in rows:
                merged = JobConditioning.from_legacy(row["prompt"], row["seed"], row["image"])
                self._db.execute("UPDATE jobs SET conditioning = ? WHERE seq = ?", (merged.to_json(), row["seq"]))
            for name in _LEGACY_CONDITIONING:
                self._db.execute(f"ALTER TABLE jobs DROP COLUMN {name}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    @staticmethod
    def _job(row: sqlite3.Row | None) -> Job | None:
        return None if row is None else job_from_record({c: row[c] for c in _COLUMNS})

    def create(self, job: Job) -> Job:
        values = job_record(job)
        with self._lock:
            self._db.execute(
                f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                [values[c] for c in _COLUMNS],
            )
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._job(self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def list(self, *, after: str | None = None, limit: int = 20, newest_first: bool = True) -> tuple[list[Job], bool]:
        direction, beyond = ("DESC", "<") if newest_first else ("ASC", ">")
        with self._lock:
            if after is None:
                rows = self._db.execute(f"SELECT * FROM jobs ORDER BY seq {direction} LIMIT ?", (limit + 1,)).fetchall()
            else:
                rows = self._db.execute(
                    f"SELECT * FROM jobs WHERE seq {beyond} (SELECT seq FROM jobs WHERE id = ?) ORDER BY seq {direction} LIMIT ?",
                    (after, limit + 1),
                ).fetchall()
        jobs = [self._job(r) for r in rows]
        return jobs[:limit], len(jobs) > limit

    def update(self, job_id: str, *, only_if: tuple[str, ...] | None = None, **fields) -> Job | None:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"cannot update job field(s) {sorted(unknown)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        sql, args = f"UPDATE jobs SET {sets} WHERE id = ?", [*fields.values(), job_id]
        if only_if:
            sql += f" AND status IN ({', '.join('?' * len(only_if))})"
            args += list(only_if)
        with self._lock:
            changed = self._db.execute(sql, args).rowcount
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone() if changed else None
        return self._job(row)

    def delete(self, job_id: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount > 0

    def claim_next(self) -> Job | None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1"
                ).fetchone()
                if row is not None:
                    self._db.execute(
                        "UPDATE jobs SET status = 'in_progress', attempts = attempts + 1 WHERE id = ?", (row["id"],)
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            if row is None:
                return None
            return self._job(self._db.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone())

    def heartbeat(self, job_id: str) -> bool:
        """One process owns this database, so a claim never expires: only report if it still runs."""
        job = self.get(job_id)
        return job is not None and job.status == "in_progress"

    def recover(self, *, max_attempts: int) -> list[Job]:
        with self._lock:
            rows = self._db.execute("SELECT id, attempts FROM jobs WHERE status = 'in_progress'").fetchall()
            for row in rows:
                if row["attempts"] >= max_attempts:
                    self._db.execute(
                        "UPDATE jobs SET status = 'failed', error = ? WHERE id = ?",
                        (f"interrupted by a server restart {row['attempts']} times", row["id"]),
                    )
                else:
                    self._db.execute("UPDATE jobs SET status = 'queued', progress = 0 WHERE id = ?", (row["id"],))
            ids = [r["id"] for r in rows]
            changed = [self._db.execute("SELECT * FROM jobs WHERE id = ?", (i,)).fetchone() for i in ids]
        return [self._job(r) for r in changed]

    def count_by_status(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status").fetchall()
        return {r["status"]: r["n"] for r in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()
