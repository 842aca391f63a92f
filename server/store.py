"""The job store: one SQLite database in WAL mode; every change is committed before it is announced."""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("kiln.server")

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT '',
    progress REAL NOT NULL DEFAULT 0,
    eta_seconds REAL,
    message TEXT NOT NULL DEFAULT '',
    error TEXT,
    params TEXT NOT NULL,
    artifacts TEXT NOT NULL DEFAULT '{}',
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    owner TEXT NOT NULL DEFAULT '',
    version INTEGER NOT NULL DEFAULT 1,
    peak_progress REAL NOT NULL DEFAULT 0,
    peak_at_start REAL NOT NULL DEFAULT 0,
    stalls INTEGER NOT NULL DEFAULT 0,
    crashes INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
"""
_ADDED_COLUMNS = {
    "owner": "TEXT NOT NULL DEFAULT ''",
    "peak_progress": "REAL NOT NULL DEFAULT 0",
    "peak_at_start": "REAL NOT NULL DEFAULT 0",
    "stalls": "INTEGER NOT NULL DEFAULT 0",
    "crashes": "INTEGER NOT NULL DEFAULT 0",
}
"""Columns newer than the first schema, added to older databases when they are opened."""


def utc_now() -> str:
    """ISO 8601 UTC time with a Z suffix, e.g. 2026-11-30T12:00:00.123Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Artifact:
    """One finished file of a job."""

    name: str
    """File name as served, e.g. asset.glb."""
    path: str
    """Path relative to the job's work folder."""
    size: int
    """Bytes, measured when the job succeeded."""


@dataclass(frozen=True)
class JobRecord:
    """A job as stored; ``version`` grows by one on every committed change."""

    id: str
    kind: str
    state: str
    stage: str
    progress: float
    eta_seconds: float | None
    message: str
    error: str | None
    params: dict[str, Any]
    artifacts: tuple[Artifact, ...]
    cancel_requested: bool
    attempts: int
    version: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    seq: int = field(default=0, compare=False)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


def _record(row: sqlite3.Row) -> JobRecord:
    arts = json.loads(row["artifacts"])
    return JobRecord(
        id=row["id"],
        kind=row["kind"],
        state=row["state"],
        stage=row["stage"],
        progress=row["progress"],
        eta_seconds=row["eta_seconds"],
        message=row["message"],
        error=row["error"],
        params=json.loads(row["params"]),
        artifacts=tuple(Artifact(n, a["path"], a["size"]) for n, a in arts.items()),
        cancel_requested=bool(row["cancel_requested"]),
        attempts=row["attempts"],
        version=row["version"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        seq=row["seq"],
    )


class JobStore:
    """Thread-safe access to the jobs table; each thread gets its own connection.

    Every method that changes a job commits (synchronous=FULL) before it returns, so
    the caller may announce the change knowing it survives a crash.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.owner = secrets.token_hex(8)
        """This store's claim mark: a running job owned by another mark was left by an earlier server."""
        self._local = threading.local()
        self._generation = 0
        self.read_only = False
        """True when the database could not be opened for writing (a full disk): reads only."""
        try:
            self.open_for_writing()
        except sqlite3.Error as exc:
            log.warning("job store %s opened read-only: %s", self.path, exc)
            self._use_read_only()

    def open_for_writing(self) -> None:
        """(Re)open the database for writing: WAL mode, the schema, columns of newer versions.

        Raises:
            sqlite3.Error: the database cannot be written (e.g. the disk is full).
        """
        self.read_only = False
        self._generation += 1
        try:
            conn = self._conn()
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            # Databases of older versions: add the columns (old jobs read as unowned, no stalls).
            columns = {row["name"] for row in conn.execute("PRAGMA table_info(jobs)")}
            for name, decl in _ADDED_COLUMNS.items():
                if name not in columns:
                    conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")
        except BaseException:
            self._use_read_only()  # keep serving reads
            raise

    def _use_read_only(self) -> None:
        self.read_only = True
        self._generation += 1

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "generation", None) != self._generation:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            conn = None
        if conn is None:
            if self.read_only:
                conn = self._read_only_conn()
            else:
                conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA busy_timeout=30000")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
            self._local.generation = self._generation
        return conn

    def _read_only_conn(self) -> sqlite3.Connection:
        # mode=ro reads what a killed server left in the -wal file too; it needs the -shm file,
        # which a full disk may not let SQLite make. immutable=1 then: no locks, no -shm or -wal
        # files (after a clean stop the -wal is merged, so nothing is missed).
        if self.path.is_file():
            for query in ("mode=ro", "immutable=1"):
                try:
                    uri = f"{self.path.resolve().as_uri()}?{query}"
                    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
                    conn.execute("SELECT COUNT(*) FROM jobs").fetchone()
                    return conn
                except sqlite3.Error as exc:
                    log.warning("job store %s unreadable with %s: %s", self.path, query, exc)
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        conn.executescript(_SCHEMA)
        return conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; on any error roll back if SQLite has not already done so.

        A COMMIT that fails for a full disk may leave SQLite with no open transaction (it rolled
        back itself); a plain ROLLBACK would then raise over the real error.
        """
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        return self._conn().execute(sql, args).rowcount

    # -- reads ---------------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        row = self._conn().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _record(row)

    def list_jobs(self, state: str | None = None, limit: int = 50) -> list[JobRecord]:
        """Jobs newest first, optionally of one state."""
        if state is None:
            rows = self._conn().execute("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))
        else:
            rows = self._conn().execute(
                "SELECT * FROM jobs WHERE state = ? ORDER BY seq DESC LIMIT ?", (state, limit)
            )
        return [_record(r) for r in rows.fetchall()]

    def count(self, state: str) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (state,)).fetchone()[0]

    # -- changes -------------------------------------------------------------------------------

    def create(self, kind: str, params: dict[str, Any], job_id: str | None = None) -> JobRecord:
        """Insert a queued job and return it."""
        job_id = job_id or secrets.token_hex(16)
        self._write(
            "INSERT INTO jobs (id, kind, state, params, created_at) VALUES (?, ?, ?, ?, ?)",
            (job_id, kind, QUEUED, json.dumps(params, sort_keys=True), utc_now()),
        )
        record = self.get(job_id)
        assert record is not None
        return record

    def recover(self, max_attempts: int) -> list[tuple[JobRecord, str]]:
        """Settle jobs left running by a server that stopped; return (job, what happened).

        A job whose cancel was requested becomes cancelled. A server stop or kill is not the
        job's fault, so it only counts against a job that made no progress since it last
        started (``stalls``): one interrupted ``max_attempts`` times in a row without getting
        further becomes failed (it may be what kills the server). Any other keeps running and
        is resumed from its checkpoints.
        """
        outcomes: list[tuple[JobRecord, str]] = []
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT *, peak_progress > peak_at_start AS moved FROM jobs WHERE state = ? ORDER BY seq",
                (RUNNING,),
            ).fetchall()
            for row in rows:
                job = _record(row)
                if row["moved"]:
                    stalls = 0
                elif row["owner"] == "":  # paused by a clean shutdown (release): not an interruption
                    stalls = row["stalls"]
                else:
                    stalls = row["stalls"] + 1
                if job.cancel_requested:
                    self._finish_in_tx(job.id, CANCELLED, "cancelled while the server was stopped", None, {})
                    outcomes.append((job, "cancelled"))
                elif stalls >= max_attempts:
                    error = (
                        f"the job was interrupted {stalls} times without making progress (the server "
                        "stopped each time before it got further); it may be what stops the server: "
                        "resubmit it with a smaller preset or output size"
                    )
                    self._finish_in_tx(job.id, FAILED, "interrupted too often", error, {})
                    outcomes.append((job, "failed"))
                else:
                    conn.execute(
                        "UPDATE jobs SET message = ?, eta_seconds = NULL, stalls = ?, version = version + 1 "
                        "WHERE id = ?",
                        ("resuming after a server restart", stalls, job.id),
                    )
                    outcomes.append((job, "resume"))
        return [(self.get(j.id) or j, what) for j, what in outcomes]

    def claim_next(self) -> JobRecord | None:
        """Move the next job to running and return it; None when there is none.

        Jobs left running by an earlier server (another owner mark) come first, then
        queued jobs in submission order. One ``BEGIN IMMEDIATE`` transaction holds SQLite's
        write lock from the look to the change, and the change is guarded by the state it
        read, so any number of workers (threads here, or processes on the same file) claim
        each job once.
        """
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT id, state FROM jobs WHERE state = ? AND cancel_requested = 0 AND owner != ? "
                "ORDER BY seq LIMIT 1",
                (RUNNING, self.owner),
            ).fetchone()
            if row is None:
                row = conn.execute(
                    "SELECT id, state FROM jobs WHERE state = ? ORDER BY seq LIMIT 1", (QUEUED,)
                ).fetchone()
            if row is None:
                return None
            claimed = conn.execute(
                "UPDATE jobs SET state = ?, attempts = attempts + 1, started_at = COALESCE(started_at, ?), "
                "eta_seconds = NULL, message = CASE WHEN state = ? THEN message ELSE 'starting' END, "
                "owner = ?, peak_at_start = peak_progress, version = version + 1 "
                "WHERE id = ? AND state = ? AND NOT (state = 'running' AND owner = ?)",
                (RUNNING, utc_now(), RUNNING, self.owner, row["id"], row["state"], self.owner),
            ).rowcount
            if claimed != 1:  # cannot happen under the write lock; never hand out a job twice
                return None
        return self.get(row["id"])

    def requeue_lost(self, job_id: str, message: str, max_crashes: int, need_progress: bool) -> bool:
        """Put a running job whose worker died back in the queue, to resume from its checkpoints.

        Counted in ``crashes``: a job is requeued at most ``max_crashes`` times (it may be what kills
        its worker). With ``need_progress`` it must also have got further since it started this
        attempt (a job that kills its worker before any progress is failed instead, as before).
        ``max_crashes`` < 0: not the job's fault (the backend went away), requeued without counting.
        Returns False when it was not requeued (the caller fails it).
        """
        counted = 0 if max_crashes < 0 else 1
        limit = 1 << 30 if max_crashes < 0 else max_crashes
        moved = "peak_progress > peak_at_start" if need_progress else "1"
        return (
            self._write(
                "UPDATE jobs SET state = ?, message = ?, owner = '', eta_seconds = NULL, "
                f"crashes = crashes + ?, version = version + 1 WHERE id = ? AND state = ? AND crashes < ? "
                f"AND cancel_requested = 0 AND {moved}",
                (QUEUED, message, counted, job_id, RUNNING, limit),
            )
            == 1
        )

    def update_progress(
        self, job_id: str, stage: str, progress: float, message: str, eta_seconds: float | None
    ) -> bool:
        """Record progress of a running job; False when it is not running any more."""
        return (
            self._write(
                "UPDATE jobs SET stage = ?, progress = ?, message = ?, eta_seconds = ?, "
                "peak_progress = MAX(peak_progress, ?), version = version + 1 WHERE id = ? AND state = ?",
                (stage, progress, message, eta_seconds, progress, job_id, RUNNING),
            )
            == 1
        )

    def _finish_in_tx(
        self, job_id: str, state: str, message: str, error: str | None, artifacts: dict[str, dict[str, Any]]
    ) -> int:
        progress_sql = "1.0" if state == SUCCEEDED else "progress"
        return self._write(
            f"UPDATE jobs SET state = ?, message = ?, error = ?, artifacts = ?, progress = {progress_sql}, "
            "eta_seconds = NULL, finished_at = ?, version = version + 1 WHERE id = ? AND state IN (?, ?)",
            (state, message, error, json.dumps(artifacts), utc_now(), job_id, QUEUED, RUNNING),
        )

    def finish(
        self,
        job_id: str,
        state: str,
        message: str = "",
        error: str | None = None,
        artifacts: list[Artifact] | None = None,
    ) -> bool:
        """Move an active job to a terminal state; False when it was already finished."""
        assert state in TERMINAL
        arts = {a.name: {"path": a.path, "size": a.size} for a in artifacts or []}
        return self._finish_in_tx(job_id, state, message, error, arts) == 1

    def request_cancel(self, job_id: str) -> JobRecord | None:
        """Cancel a queued job at once, flag a running one for its worker; finished jobs are unchanged."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE jobs SET state = ?, message = 'cancelled before it started', finished_at = ?, "
                "version = version + 1 WHERE id = ? AND state = ?",
                (CANCELLED, utc_now(), job_id, QUEUED),
            )
            conn.execute(
                "UPDATE jobs SET cancel_requested = 1, message = 'cancelling', version = version + 1 "
                "WHERE id = ? AND state = ? AND cancel_requested = 0",
                (job_id, RUNNING),
            )
        return self.get(job_id)

    def requeue(self, job_id: str) -> JobRecord | None:
        """Queue a failed or cancelled job again (Resume); it restarts from the checkpoints it kept.

        Returns the job, or None when it is unknown or not failed/cancelled.
        """
        changed = self._write(
            "UPDATE jobs SET state = ?, message = 'queued again (resume)', error = NULL, "
            "finished_at = NULL, eta_seconds = NULL, cancel_requested = 0, stalls = 0, crashes = 0, owner = '', "
            "version = version + 1 WHERE id = ? AND state IN (?, ?)",
            (QUEUED, job_id, FAILED, CANCELLED),
        )
        return self.get(job_id) if changed == 1 else None

    def delete(self, job_id: str) -> bool:
        """Remove a finished job's row; False when it is unknown or still active."""
        placeholders = ", ".join("?" for _ in TERMINAL)
        return (
            self._write(f"DELETE FROM jobs WHERE id = ? AND state IN ({placeholders})", (job_id, *TERMINAL))
            == 1
        )

    def release(self, job_id: str) -> None:
        """A job stopped by a clean server shutdown: it resumes next start without costing an attempt."""
        self._write(
            "UPDATE jobs SET attempts = MAX(attempts - 1, 0), eta_seconds = NULL, "
            "message = 'paused by a server shutdown; resumes on the next start', owner = '', "
            "version = version + 1 "
            "WHERE id = ? AND state = ?",
            (job_id, RUNNING),
        )
