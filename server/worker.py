"""The worker process: runs one job at a time through core.pipelines.jobs.run_job.

It is started with the ``spawn`` method (torch is loaded here, never in the server
process) and talks to the supervisor over a Pipe:

- supervisor -> worker: ``("run", job_id, kind, params, work_dir)``; the engine settings are
  given once, when the worker starts
- worker -> supervisor: ``("hello", info)``, ``("progress", job_id, stage, fraction, message)``,
  ``("done", job_id, {name: path})``, ``("cancelled", job_id)``, ``("failed", job_id, reason)``

Cancellation is a shared Event read by the job's Reporter, so a job stops at its
next progress report; the supervisor kills the process if that takes too long.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PARENT_POLL_S = 0.25
"""How often the worker checks that the server process is still alive."""
PROGRESS_INTERVAL_S = 0.1
"""Least time between progress messages; cancellation is still checked on every report."""
INTERRUPTED_EXIT = 75
"""Exit status of a worker stopped by SIGTERM (EX_TEMPFAIL): its job is resumed, not failed."""
LOCK_TIMEOUT_S = 60.0
"""How long to wait for a job folder held by an orphaned worker before failing the job."""

log = logging.getLogger("kiln.worker")


def detect_device() -> dict[str, Any]:
    """CUDA when torch sees a GPU, else CPU with a warning a person can act on."""
    try:
        import torch
    except ImportError:
        return {
            "device": "cpu",
            "device_name": "",
            "device_warning": "torch is not installed in the server's environment: "
            "pip install -r requirements.txt; jobs that need it will fail",
        }
    if torch.cuda.is_available():
        return {"device": "cuda", "device_name": torch.cuda.get_device_name(0), "device_warning": None}
    return {
        "device": "cpu",
        "device_name": "",
        "device_warning": "no CUDA GPU found: jobs run on the CPU and take minutes instead of seconds; "
        "install a CUDA build of torch on a machine with an NVIDIA GPU for speed",
    }


def _detach_and_handle_term() -> None:
    """Own session, so a terminal's Ctrl-C or a group signal reaches only the server, which stops
    the worker itself; a SIGTERM sent to the worker anyway (e.g. systemd stopping the whole
    service) exits with INTERRUPTED_EXIT so the supervisor resumes the job instead of failing it.
    """
    if hasattr(os, "setsid"):
        with contextlib.suppress(OSError):
            os.setsid()
    worker_pid = os.getpid()

    def on_term(signum: int, frame: Any) -> None:
        if os.getpid() != worker_pid:  # a process an engine forked: default behaviour
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        os._exit(INTERRUPTED_EXIT)

    signal.signal(signal.SIGTERM, on_term)


def _watch_parent(parent_pid: int) -> None:
    # A worker orphaned by kill -9 of the server must not keep writing into a job
    # folder that the restarted server's new worker resumes from.
    while True:
        if os.getppid() != parent_pid:
            os._exit(70)
        time.sleep(PARENT_POLL_S)


@contextmanager
def _job_lock(work_dir: Path):
    """Hold an exclusive lock on the job folder (POSIX), so two workers never share one."""
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: the parent watchdog alone keeps workers apart
        yield
        return
    with open(work_dir / ".lock", "w") as fh:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    from core.pipelines.jobs import JobError

                    raise JobError(
                        f"another process still holds the job folder {work_dir}; stop any stray "
                        "kiln worker processes and resubmit the job"
                    ) from None
                time.sleep(0.1)
        yield


def _send(conn: Any, msg: tuple) -> None:
    """Send to the supervisor; if it is gone (server stopping), exit quietly: checkpoints are atomic."""
    try:
        conn.send(msg)
    except (BrokenPipeError, EOFError, OSError):
        os._exit(0)


def _reason(exc: BaseException, kind: str, work_dir: Path | None = None) -> str:
    from server.disk import disk_full_reason, is_disk_full

    if work_dir is not None and is_disk_full(exc):
        return disk_full_reason(work_dir.parent.parent)  # data_dir/jobs/<id>
    if isinstance(exc, MemoryError):
        return f"the {kind} engine ran out of memory; resubmit with a smaller preset or output resolution"
    return f"the {kind} engine failed with {type(exc).__name__}: {exc}; see the server log for the traceback"


def worker_main(
    conn: Any,
    cancel_event: Any,
    extra_engines: dict[str, str],
    parent_pid: int,
    nice: int = 0,
    settings: Any = None,
    env: dict[str, str] | None = None,
) -> None:
    """Entry point of the worker process (``multiprocessing`` target).

    ``env`` is set before torch is imported: ``CUDA_VISIBLE_DEVICES`` pins the worker to its GPU
    (the pool's ``--gpus``), so the engine's ``cuda:0`` is that GPU.
    """
    os.environ.update(env or {})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s worker: %(message)s")
    _detach_and_handle_term()
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="watch-parent").start()
    if nice and hasattr(os, "nice"):
        # Below the API's priority: on a shared CPU, status polls preempt the job, not the reverse.
        os.nice(nice)

    from core.pipelines.jobs import EngineSettings

    settings = settings or EngineSettings()  # the operator's: text model, avatar weights, threads

    # 1. Device, threads and engine table; extra kinds go into the one table run_job reads.
    hello = {"pid": os.getpid(), **detect_device(), "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}
    try:
        import torch

        if settings.threads:
            torch.set_num_threads(int(settings.threads))
        hello["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    _send(conn, ("hello", hello))
    from core.pipelines import jobs
    from core.progress import Reporter

    for kind, target in extra_engines.items():
        jobs.register_engine(kind, target)

    # 2. Run jobs until the supervisor closes the pipe.
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] != "run":
            continue
        _, job_id, kind, params, work_dir = msg
        work_dir = Path(work_dir)

        def report(event, job_id=job_id):
            _send(conn, ("progress", job_id, event.stage, float(event.fraction), event.message))

        reporter = Reporter(report, cancel_event.is_set, min_interval=PROGRESS_INTERVAL_S)
        outcome = run_one(job_id, kind, params, work_dir, reporter, settings)
        _send(conn, (outcome[0], job_id, *outcome[1:]))


def run_one(
    job_id: str, kind: str, params: dict[str, Any], work_dir: Path, reporter: Any, settings: Any
) -> tuple:
    """Run one job through ``run_job`` and say how it ended, as the worker protocol does (less the id):
    ``("done", {name: path})``, ``("cancelled",)`` or ``("failed", reason)``.

    The one place a job runs, shared by the local worker and the Ray actor (server/ray_bridge.py).
    """
    from core.pipelines import jobs
    from core.progress import Cancelled

    try:
        with _job_lock(work_dir):
            result = jobs.run_job(kind, params, work_dir, reporter, settings)
        return ("done", {str(k): str(v) for k, v in result.items()})
    except Cancelled:
        return ("cancelled",)
    except jobs.JobError as exc:
        from server.disk import disk_full_reason, is_disk_full

        full = is_disk_full(exc.__cause__ or exc.__context__)
        return ("failed", disk_full_reason(work_dir.parent.parent) if full else str(exc))
    except Exception as exc:  # any engine bug fails the job, never the worker
        reason = _reason(exc, kind, work_dir)
        if reason.startswith("the disk is full"):  # not a bug: one line, no traceback
            log.error("job %s (%s): %s (%s)", job_id, kind, reason, exc)
        else:
            log.error("job %s (%s) raised:\n%s", job_id, kind, traceback.format_exc())
        return ("failed", reason)
