"""The supervisor: a thread in the server process that feeds jobs to the worker process one at a time.

It owns the worker's life: starts it (spawn), restarts it after a crash, kills it when a
cancelled job does not stop in time. Every job transition is committed to the store
first, then announced (``publish``) and logged as one line.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.pipelines.jobs import EngineSettings
from server.config import ServerConfig
from server.disk import RESERVE_BYTES, Reserve, below_floor_reason, disk_full_reason, free_mb, is_disk_full
from server.store import CANCELLED, FAILED, RUNNING, SUCCEEDED, Artifact, JobRecord, JobStore
from server.worker import INTERRUPTED_EXIT, worker_main

log = logging.getLogger("kiln.server")

ARTIFACT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""Names an engine may give its artifacts: no separators, no leading dot."""
POLL_S = 0.05
"""How often the supervisor looks at the worker pipe while a job runs."""
DISK_RETRY_S = 2.0
"""How often a supervisor held up by a full disk looks again."""
WORKER_ENV_HIDDEN = ("KILN_TOKEN",)
"""Environment variables the worker must not inherit: engines never need the API's secret."""


def job_dir(data_dir: Path, job_id: str) -> Path:
    """The work folder of one job."""
    return data_dir / "jobs" / job_id


def engine_params(job: JobRecord, work_dir: Path) -> dict[str, Any]:
    """The params an engine sees: the stored request, with the photo's path made absolute.

    The upload's description (``photo``: file name, size) is for clients and stays in the store.
    """
    params = dict(job.params)
    params.pop("photo", None)
    if params.get("photo_path"):
        params["photo_path"] = str(work_dir / params["photo_path"])
    return params


def engine_settings(config: ServerConfig) -> EngineSettings:
    """The operator's engine settings, handed to the worker when it starts."""
    return EngineSettings(
        text_model=config.text_to_3d_model,
        avatar_weights=config.avatar_weights,
        threads=config.worker_threads,
    )


def collect_artifacts(result: dict[str, str], work_dir: Path) -> list[Artifact]:
    """Check what an engine returned: plain names, existing files inside the job folder.

    Raises:
        ValueError: with the reason, when any entry breaks those rules.
    """
    root = work_dir.resolve()
    artifacts = []
    for name, raw in sorted(result.items()):
        if not ARTIFACT_NAME.fullmatch(name):
            raise ValueError(f"the engine returned an artifact with an unsafe name {name!r}")
        path = Path(raw)
        path = (path if path.is_absolute() else work_dir / path).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise ValueError(f"the engine's artifact {name} is not a file inside the job folder: {raw}")
        artifacts.append(Artifact(name, path.relative_to(root).as_posix(), path.stat().st_size))
    return artifacts


def crash_reason(exitcode: int | None, stage: str) -> str:
    """Why a worker died, in words a person can act on."""
    where = f" during stage {stage!r}" if stage else ""
    if exitcode is not None and exitcode < 0:
        try:
            how = f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"killed by signal {-exitcode}"
        if exitcode == -signal.SIGKILL:
            how += " (often the system running out of memory)"
    else:
        how = f"exited with code {exitcode}"
    return (
        f"the worker process {how}{where}; the worker was restarted. Resubmit the job; if it happens "
        "again, use a smaller preset or output size and check the server log"
    )


class Supervisor:
    """Runs queued jobs in a worker process, one at a time, and records every transition."""

    def __init__(self, store: JobStore, config: ServerConfig, publish: Callable[[str], None]) -> None:
        self.store = store
        self.config = config
        self.publish = publish
        self.device: dict[str, Any] = {"device": "starting", "device_name": "", "device_warning": None}
        self.current_job: str | None = None
        self._ctx = multiprocessing.get_context("spawn")
        self._cancel_event = self._ctx.Event()
        self._proc: Any = None
        self._conn: Any = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._cancels: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._spawned_at = 0.0
        self._quick_deaths = 0
        self.reserve = Reserve(config.data_dir, config.min_free_mb)
        self.store_problem: str | None = None
        """Why the job store cannot be written now (a full disk at start-up or later); None when fine.
        While set, submissions are refused with it and no job starts."""
        self.paused_for_space: str | None = None
        """Why queued jobs wait: free space is under the floor (``--min-free-mb``)."""
        self._recovered = False
        self._reserve_checked = 0.0

    # -- control (any thread) ------------------------------------------------------------------

    def start(self) -> None:
        """Settle jobs left by a previous run, start the worker and the supervising thread.

        On a full disk recovery may fail: the server then starts degraded (reads only,
        ``store_problem`` says why) and the supervising thread retries until space is back.
        """
        for name in WORKER_ENV_HIDDEN:
            os.environ.pop(name, None)  # the worker is spawned with this process's environment
        self._try_recover()
        self._spawn_worker()
        self._thread = threading.Thread(target=self._loop, name="kiln-supervisor", daemon=True)
        self._thread.start()

    def _try_recover(self) -> bool:
        """Open the store for writing and settle jobs of an earlier run; False (and why, logged) if not."""
        try:
            if self.store.read_only:
                self.store.open_for_writing()
            outcomes = self.store.recover(self.config.max_attempts)
        except Exception as exc:  # start-up must never crash on the store: serve reads, retry later
            # SQLite says "disk I/O error" when it cannot even make its -shm file on a full disk.
            full = is_disk_full(exc) or free_mb(self.config.data_dir) < max(self.config.min_free_mb, 1.0)
            reason = (
                disk_full_reason(self.config.data_dir, then="submit again")
                if full
                else f"the job store {self.store.path} cannot be written ({exc}); see the server log"
            )
            if reason != self.store_problem:
                log.warning("job store not writable, new jobs are refused until it is: %s", reason)
                if not full:
                    log.debug("store error", exc_info=True)
            self.store_problem = reason
            return False
        for job, what in outcomes:
            log.info("job %s (%s): found running after a restart -> %s", job.id, job.kind, what)
            self.publish(job.id)
        if self.store_problem is not None:
            log.info("job store writable again; taking jobs")
        self.store_problem = None
        self._recovered = True
        self.reserve.restore()
        return True

    def space_short(self) -> str | None:
        """Why there is too little free space to take jobs (under the floor), else None.

        While the space reserve is spent (it was freed to record a job's failure), space
        counts as back only once it can be remade too: the freed megabytes are not for jobs.
        """
        floor = self.config.min_free_mb
        if floor <= 0:
            return None
        need = floor if self.reserve.path.is_file() else floor + RESERVE_BYTES / 1e6
        if free_mb(self.config.data_dir) < need:
            return below_floor_reason(self.config.data_dir, floor)
        return None

    def _space_ok(self) -> bool:
        """False (with ``paused_for_space`` set) while free space is under the floor."""
        reason = self.space_short()
        if reason is not None:
            if self.paused_for_space is None:
                log.warning("queued jobs wait: %s", reason)
            self.paused_for_space = reason
            return False
        if self.paused_for_space is not None:
            log.info("free space is above the floor again; taking jobs")
        self.paused_for_space = None
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking jobs and end the worker; a running job stays running and resumes next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._kill_worker(graceful=True)
        if self._thread is None or not self._thread.is_alive():
            # Free the Event's semaphores now, not at interpreter exit (resource_tracker warns then).
            self._cancel_event = None

    def wake(self) -> None:
        """A job was queued: look now instead of at the next idle poll."""
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Ask the running job to stop (the store already has the request committed)."""
        with self._lock:
            self._cancels.add(job_id)
        self._wake.set()

    @property
    def worker_pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.is_alive() else None

    # -- worker process ------------------------------------------------------------------------

    def _spawn_worker(self) -> None:
        parent_conn, child_conn = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=worker_main,
            args=(
                child_conn,
                self._cancel_event,
                self.config.extra_engines,
                os.getpid(),
                self.config.worker_nice,
                engine_settings(self.config),
            ),
            name="kiln-worker",
            # Not a daemon: engines may start processes of their own (daemons cannot). stop()
            # ends it, and it exits by itself if the server dies (parent watchdog).
            daemon=False,
        )
        proc.start()
        self._spawned_at = time.monotonic()
        child_conn.close()
        self._proc, self._conn = proc, parent_conn
        log.info("worker process %d started", proc.pid)

    def _kill_worker(self, graceful: bool = False) -> int | None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            conn.close()  # a worker waiting for work exits on EOF
        if proc is None:
            return None
        if graceful:
            proc.join(1.0)
        if proc.is_alive():
            proc.kill()
        proc.join(5.0)
        return proc.exitcode

    def _ensure_worker(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        if self._proc is not None:
            # Died while idle (a broken install, an import that crashes): back off so a
            # crash loop does not spin, doubling up to 30 s while it keeps dying young.
            young = time.monotonic() - self._spawned_at < 10.0
            self._quick_deaths = self._quick_deaths + 1 if young else 0
            delay = min(30.0, 0.5 * 2**self._quick_deaths) if young else 0.0
            log.warning(
                "worker process %d exited with code %s; restarting it%s",
                self._proc.pid,
                self._proc.exitcode,
                f" in {delay:g} s" if delay else "",
            )
            self._kill_worker()
            if self._stop.wait(delay):
                return
        self._spawn_worker()

    def _on_hello(self, info: dict[str, Any]) -> None:
        self.device = info
        if info.get("device_warning"):
            log.warning("worker %s on %s: %s", info.get("pid"), info["device"], info["device_warning"])
        else:
            log.info("worker %s on %s %s", info.get("pid"), info["device"], info.get("device_name", ""))

    # -- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                needs_recovery = not self._recovered or self.store_problem is not None
                if needs_recovery and not self._try_recover():
                    self._stop.wait(DISK_RETRY_S)
                    continue
                self._ensure_worker()
                if self._stop.is_set():
                    break
                if not self._space_ok():
                    self._idle(DISK_RETRY_S)
                    continue
                job = self.store.claim_next()
                if job is None:
                    self._idle()
                    continue
                resumed = job.attempts > 1
                log.info(
                    "job %s (%s): %s -> running%s",
                    job.id,
                    job.kind,
                    "running" if resumed else "queued",
                    f" (attempt {job.attempts}, resuming from checkpoints)" if resumed else "",
                )
                self.publish(job.id)
                self._run(job)
            except Exception as exc:  # the supervisor must outlive any single bad job
                if is_disk_full(exc):
                    self._on_disk_full()
                    continue
                log.exception("supervisor error; restarting the worker and retrying in 1 s")
                self._kill_worker()
                if self.current_job is not None:
                    # Hand the job back (it resumes from its checkpoints) rather than strand it.
                    with contextlib.suppress(Exception):
                        self.store.release(self.current_job)
                    self.current_job = None
                time.sleep(1.0)
        self.current_job = None

    def _on_disk_full(self) -> None:
        """A store write failed for a full disk: stop the running job and record why, whatever it takes.

        The worker is stopped first (it is what writes), then the job is failed with the
        reason. If even that write fails, the space reserve is freed for it; without one,
        it is retried every few seconds (``store_problem`` tells clients meanwhile) until
        space comes back. The job is never left running without a reason.
        """
        job_id, self.current_job = self.current_job, None
        reason = disk_full_reason(self.config.data_dir)
        log.error("disk full while %s: %s", f"job {job_id} ran" if job_id else "idle", reason)
        if job_id is None:
            self.store_problem = disk_full_reason(self.config.data_dir, then="submit again")
            self._stop.wait(DISK_RETRY_S)
            return
        self._kill_worker()
        with self._lock:
            self._cancels.discard(job_id)
        while not self._stop.is_set():
            try:
                if self.store.finish(job_id, FAILED, message="the disk is full", error=reason):
                    log.warning("job %s: %s -> %s: %s", job_id, RUNNING, FAILED, reason)
                    self.publish(job_id)
                self.store_problem = None
                return
            except Exception as exc:
                if not is_disk_full(exc):
                    log.exception("job %s: could not record its failure", job_id)
                    return
                if self.reserve.release():
                    continue
                self.store_problem = reason
                self._stop.wait(DISK_RETRY_S)
                reason = disk_full_reason(self.config.data_dir)

    def _idle(self, wait_s: float = 0.5) -> None:
        # Read the worker's hello while no job runs, then sleep until woken.
        conn = self._conn
        with contextlib.suppress(EOFError, OSError):
            while conn is not None and conn.poll(0):
                msg = conn.recv()
                if msg[0] == "hello":
                    self._on_hello(msg[1])
        now = time.monotonic()
        if now - self._reserve_checked > 10.0:
            self._reserve_checked = now
            self.reserve.restore()  # remade once space is back
        self._wake.wait(wait_s)
        self._wake.clear()

    def _cancel_wanted(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._cancels

    def _run(self, job: JobRecord) -> None:
        work_dir = job_dir(self.config.data_dir, job.id)
        self._cancel_event.clear()
        self.current_job = job.id
        t0 = time.monotonic()
        state: dict[str, Any] = {"stage": job.stage, "eta_from": None}
        kill_at: float | None = None
        params = engine_params(job, work_dir)
        with contextlib.suppress(OSError, ValueError):  # a dead worker is found below as a crash
            self._conn.send(("run", job.id, job.kind, params, str(work_dir)))
        while True:
            if self._stop.is_set():
                with contextlib.suppress(Exception):  # on a full disk it stays running: still resumed
                    self.store.release(job.id)
                log.info("job %s (%s): left running for the next server start", job.id, job.kind)
                return
            now = time.monotonic()
            if kill_at is None and self._cancel_wanted(job.id):
                self._cancel_event.set()
                kill_at = now + self.config.cancel_grace_s
            if kill_at is not None and now >= kill_at:
                self._kill_worker()
                self._finish(
                    job,
                    CANCELLED,
                    t0,
                    message=(
                        f"cancelled; the engine did not stop within {self.config.cancel_grace_s:g} s, "
                        "so its worker was restarted"
                    ),
                )
                return
            try:
                if self._conn.poll(POLL_S):
                    msg = self._conn.recv()
                elif not self._proc.is_alive():
                    raise EOFError
                else:
                    continue
            except (EOFError, OSError):
                exitcode = self._kill_worker()
                if kill_at is not None:
                    self._finish(job, CANCELLED, t0, message="cancelled; the worker stopped")
                elif self._stop.is_set() or exitcode == INTERRUPTED_EXIT:
                    # Stopped from outside (service stop, shutdown): not the job's fault.
                    self.store.release(job.id)
                    log.info(
                        "job %s (%s): worker stopped by a signal; the job resumes from its checkpoints",
                        job.id,
                        job.kind,
                    )
                    self.publish(job.id)
                else:
                    self._finish(
                        job,
                        FAILED,
                        t0,
                        error=crash_reason(exitcode, state["stage"]),
                        message="worker crashed",
                    )
                return
            if self._handle(job, msg, work_dir, t0, state):
                return

    def _handle(self, job: JobRecord, msg: tuple, work_dir: Path, t0: float, state: dict[str, Any]) -> bool:
        """Apply one worker message; True when the job is finished."""
        kind = msg[0]
        if kind == "hello":
            self._on_hello(msg[1])
            return False
        if msg[1] != job.id:
            return False  # a straggler from an earlier job
        if kind == "progress":
            _, _, stage, fraction, message = msg
            state["stage"] = stage
            # ETA from the rate since the engine's first report: worker start-up, model loading
            # and a resume's skipped steps would otherwise skew it.
            now = time.monotonic()
            if state["eta_from"] is None:
                state["eta_from"] = (now, fraction)
            since, p_first = state["eta_from"]
            elapsed, gained = now - since, fraction - p_first
            eta = elapsed * (1.0 - fraction) / gained if gained >= 0.02 and elapsed >= 0.5 else None
            if self.store.update_progress(job.id, stage, fraction, message, eta):
                self.publish(job.id)
            return False
        if kind == "done":
            try:
                artifacts = collect_artifacts(msg[2], work_dir)
            except ValueError as exc:
                self._finish(job, FAILED, t0, error=f"{exc}; this is a bug in the engine, please report it")
                return True
            self._finish(job, SUCCEEDED, t0, message="done", artifacts=artifacts)
            if not any(a.path.startswith("checkpoints/") for a in artifacts):
                shutil.rmtree(work_dir / "checkpoints", ignore_errors=True)  # resume data, no longer needed
            return True
        if kind == "cancelled":
            self._finish(job, CANCELLED, t0, message="cancelled")
            return True
        if kind == "failed":
            self._finish(job, FAILED, t0, error=msg[2], message="failed")
            return True
        log.warning("job %s: unknown worker message %r ignored", job.id, kind)
        return False

    def _finish(
        self,
        job: JobRecord,
        state: str,
        t0: float,
        message: str = "",
        error: str | None = None,
        artifacts: list[Artifact] | None = None,
    ) -> None:
        with self._lock:
            self._cancels.discard(job.id)
        # current_job stays set until the write is done: a full disk here is handled as for
        # any store write of a running job (_on_disk_full), never leaving it running unexplained.
        finished = self.store.finish(job.id, state, message=message, error=error, artifacts=artifacts)
        self.current_job = None
        if not finished:
            return
        took = time.monotonic() - t0
        detail = f" ({', '.join(a.name for a in artifacts)})" if artifacts else ""
        if error:
            detail = f": {error}"
        log_fn = log.warning if state == FAILED else log.info
        log_fn("job %s (%s): %s -> %s after %.1f s%s", job.id, job.kind, RUNNING, state, took, detail)
        self.publish(job.id)
