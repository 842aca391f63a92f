"""The supervisor: the worker pool of the server process, one lane per worker.

Each lane is a thread that claims the next job from the store (one atomic transaction, so no job
runs twice) and feeds it to its own worker process: a local worker pinned to one GPU
(``CUDA_VISIBLE_DEVICES``), or, with ``--ray``, a bridge process that runs it on a Ray actor.
A lane owns its worker's life: starts it (spawn), restarts it after a crash with a back-off,
kills it when a cancelled job does not stop in time. Every job transition is committed to the
store first, then announced (``publish``) and logged as one line.
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
from server.devices import plan_workers
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
RAY_PROBE_TIMEOUT_S = 60.0
"""How long the server waits at start for the Ray cluster to say how many jobs it can run."""
RAY_RETRY_MAX_S = 10.0
"""Longest wait between reconnections to a Ray cluster that is down."""


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


def ray_options(config: ServerConfig) -> dict[str, Any]:
    """What a Ray bridge needs: the cluster, how much each job asks for, where nodes see the data,
    and the environment its actors get (the repo on PYTHONPATH, KILN_* settings but the token)."""
    repo = str(Path(__file__).resolve().parents[1])
    pythonpath = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH", "")) if p)
    env = {k: v for k, v in os.environ.items() if k.startswith("KILN_") and k not in WORKER_ENV_HIDDEN}
    return {
        "address": config.ray,
        "data_dir": str(config.ray_data_dir or config.data_dir),
        "cpus_per_job": config.ray_cpus_per_job,
        "gpus_per_job": config.ray_gpus_per_job,
        "env_vars": {**env, "PYTHONPATH": pythonpath},
    }


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
    """The worker pool: one lane (a thread and its worker process) per GPU, or per Ray slot.

    The job store is the one source of truth: each lane claims its next job in one atomic store
    transaction (``JobStore.claim_next``), so no job runs twice. What the lanes share lives here:
    crash recovery of an earlier run, the disk state, cancel requests and the backend's state.
    """

    def __init__(self, store: JobStore, config: ServerConfig, publish: Callable[[str], None]) -> None:
        self.store = store
        self.config = config
        self.publish = publish
        self.device: dict[str, Any] = {"device": "starting", "device_name": "", "device_warning": None}
        self._ctx = multiprocessing.get_context("spawn")
        self._stop = threading.Event()
        self._cancels: set[str] = set()
        self._lock = threading.Lock()
        self._recover_lock = threading.Lock()
        self.lanes: list[Lane] = []
        self.reserve = Reserve(config.data_dir, config.min_free_mb)
        self.store_problem: str | None = None
        """Why the job store cannot be written now (a full disk at start-up or later); None when fine.
        While set, submissions are refused with it and no job starts."""
        self.paused_for_space: str | None = None
        """Why queued jobs wait: free space is under the floor (``--min-free-mb``)."""
        self._recovered = False
        self._reserve_checked = 0.0
        self.backend: dict[str, Any] = (
            {"kind": "ray", "address": config.ray, "status": "starting", "message": "connecting to Ray"}
            if config.ray
            else {"kind": "local", "address": None, "status": "up", "message": None}
        )
        """Where jobs run: ``local`` worker processes, or a Ray cluster (``status`` up/down/starting,
        ``message`` says why it is down and what to do)."""

    # -- control (any thread) ------------------------------------------------------------------

    def start(self) -> None:
        """Settle jobs left by a previous run, then start every lane.

        On a full disk recovery may fail: the server then starts degraded (reads only,
        ``store_problem`` says why) and the lanes retry until space is back.
        """
        for name in WORKER_ENV_HIDDEN:
            os.environ.pop(name, None)  # workers are spawned with this process's environment
        self.ensure_recovered()
        if self.config.ray:
            slots = self.config.workers or self._probe_ray_slots()
            self.lanes = [Lane(self, i, None, ray=True) for i in range(slots)]
            log.info("Ray backend %s: %d job slots", self.config.ray, slots)
        else:
            gpus = plan_workers(self.config.workers, self.config.gpus)
            self.lanes = [Lane(self, i, gpu) for i, gpu in enumerate(gpus)]
            where = ", ".join(f"GPU {g}" for g in gpus if g is not None) or "the CPU"
            log.info("%d local worker%s on %s", len(gpus), "s" if len(gpus) > 1 else "", where)
        for lane in self.lanes:
            lane.start()

    def _probe_ray_slots(self) -> int:
        """Job slots of the Ray cluster (its GPUs, else CPUs per --ray-cpus-per-job), asked in a
        short-lived process so this one never imports ray; 1 when the cluster does not answer."""
        from server.ray_bridge import probe_main

        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=probe_main, args=(child, ray_options(self.config)), daemon=True)
        proc.start()
        child.close()
        slots = 1
        try:
            if parent.poll(RAY_PROBE_TIMEOUT_S):
                kind, value = parent.recv()
                if kind == "slots":
                    slots = max(1, int(value))
                else:
                    log.warning("Ray cluster %s: %s; starting 1 job slot", self.config.ray, value)
            else:
                log.warning(
                    "Ray cluster %s did not answer in %g s; 1 job slot", self.config.ray, RAY_PROBE_TIMEOUT_S
                )
        except (EOFError, OSError):
            log.warning("Ray probe process died; starting 1 job slot")
        finally:
            if proc.is_alive():
                proc.kill()
            proc.join(5)
        return slots

    def ensure_recovered(self) -> bool:
        """True once the store is writable and jobs of an earlier run are settled (once, for all lanes)."""
        with self._recover_lock:
            if self._recovered and self.store_problem is None:
                return True
            return self._try_recover()

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
        """Why queued jobs must wait for space (free space under ``--min-free-mb``), else None.

        While the space reserve is spent (freed to record a job's failure), space
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

    def _maybe_restore_reserve(self) -> None:
        now = time.monotonic()
        if now - self._reserve_checked > 10.0:
            self._reserve_checked = now
            self.reserve.restore()  # remade once space is back

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking jobs and end the workers; running jobs stay running and resume next start."""
        self._stop.set()
        for lane in self.lanes:
            lane.wake()
        deadline = time.monotonic() + timeout
        for lane in self.lanes:
            if lane.thread is not None:
                lane.thread.join(max(0.1, deadline - time.monotonic()))
        for lane in self.lanes:
            lane.shut_down()

    def wake(self) -> None:
        """A job was queued: every idle lane looks now instead of at its next idle poll."""
        for lane in self.lanes:
            lane.wake()

    def cancel(self, job_id: str) -> None:
        """Ask the running job to stop (the store already has the request committed)."""
        with self._lock:
            self._cancels.add(job_id)
        self.wake()

    def cancel_wanted(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._cancels

    def cancel_done(self, job_id: str) -> None:
        with self._lock:
            self._cancels.discard(job_id)

    def backend_up(self) -> None:
        if self.backend["status"] != "up":
            log.info("Ray backend %s is up", self.config.ray)
        self.backend.update(status="up", message=None)

    def backend_down(self, message: str) -> None:
        if self.backend["status"] != "down" or self.backend["message"] != message:
            log.warning("Ray backend %s is down: %s", self.config.ray, message)
        self.backend.update(status="down", message=message)

    @property
    def current_job(self) -> str | None:
        """A job running now (the first lane's that has one), for the single-worker ``running`` field."""
        return next((lane.current_job for lane in self.lanes if lane.current_job), None)

    @property
    def worker_pid(self) -> int | None:
        """The first lane's worker process id."""
        return self.lanes[0].worker_pid if self.lanes else None

    def workers_info(self) -> list[dict[str, Any]]:
        """Each worker: its backend, device, process, and the job it runs (GET /v1/info ``workers``)."""
        return [lane.info() for lane in self.lanes]


class Lane:
    """One worker of the pool: a thread that claims jobs and feeds them to its worker process.

    A local lane's process is ``server.worker`` pinned to its GPU; a Ray lane's is the bridge
    (``server.ray_bridge``), the Ray driver that runs its jobs on an actor in the cluster. Both
    speak the same pipe protocol (see server/worker.py), so everything below is shared.
    """

    def __init__(self, pool: Supervisor, index: int, gpu: str | None, ray: bool = False) -> None:
        self.pool = pool
        self.store = pool.store
        self.config = pool.config
        self.publish = pool.publish
        self.index = index
        self.gpu = gpu
        self.ray = ray
        self.device: dict[str, Any] = {"device": "starting", "device_name": "", "device_warning": None}
        self.current_job: str | None = None
        self.jobs_run = 0
        self.ready = False
        """True once the worker said hello (a Ray lane takes jobs only then: the cluster answered)."""
        self._cancel_event = pool._ctx.Event()
        self._proc: Any = None
        self._conn: Any = None
        self._wake = threading.Event()
        self.thread: threading.Thread | None = None
        self._spawned_at = 0.0
        self._quick_deaths = 0

    @property
    def name(self) -> str:
        return f"{'ray' if self.ray else 'worker'} {self.index}"

    def start(self) -> None:
        self._spawn_worker()
        self.thread = threading.Thread(target=self._loop, name=f"kiln-lane-{self.index}", daemon=True)
        self.thread.start()

    def wake(self) -> None:
        self._wake.set()

    def shut_down(self) -> None:
        self._kill_worker(graceful=True)
        if self.thread is None or not self.thread.is_alive():
            # Free the Event's semaphores now, not at interpreter exit (resource_tracker warns then).
            self._cancel_event = None

    @property
    def worker_pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.is_alive() else None

    def info(self) -> dict[str, Any]:
        if self.ray:
            device = self.device.get("device", "starting")
        elif self.gpu is not None:
            device = f"cuda:{self.gpu}" if self.device.get("device") == "cuda" else self.device.get("device")
        else:
            device = self.device.get("device", "starting")
        return {
            "index": self.index,
            "backend": "ray" if self.ray else "local",
            "device": device,
            "device_name": self.device.get("device_name", ""),
            "gpu": self.gpu if not self.ray else self.device.get("gpu"),
            "cuda_visible_devices": self.device.get("gpu"),
            "pid": self.device.get("pid") if self.ray else self.worker_pid,
            "node": self.device.get("node"),
            "running": self.current_job,
            "jobs_run": self.jobs_run,
        }

    # -- worker process ------------------------------------------------------------------------

    def _spawn_worker(self) -> None:
        parent_conn, child_conn = self.pool._ctx.Pipe()
        if self.ray:
            from server.ray_bridge import bridge_main

            target: Any = bridge_main
            args: tuple = (
                child_conn,
                self._cancel_event,
                self.config.extra_engines,
                os.getpid(),
                engine_settings(self.config),
                ray_options(self.config),
            )
        else:
            target = worker_main
            args = (
                child_conn,
                self._cancel_event,
                self.config.extra_engines,
                os.getpid(),
                self.config.worker_nice,
                engine_settings(self.config),
                {"CUDA_VISIBLE_DEVICES": self.gpu} if self.gpu is not None else {},
            )
        proc = self.pool._ctx.Process(
            target=target,
            args=args,
            name=f"kiln-{'ray-bridge' if self.ray else 'worker'}-{self.index}",
            # Not a daemon: engines may start processes of their own (daemons cannot). stop()
            # ends it, and it exits by itself if the server dies (parent watchdog).
            daemon=False,
        )
        proc.start()
        self._spawned_at = time.monotonic()
        child_conn.close()
        self._proc, self._conn = proc, parent_conn
        self.ready = False
        where = f" on GPU {self.gpu}" if self.gpu is not None else ""
        log.info(
            "%s: %s process %d started%s", self.name, "bridge" if self.ray else "worker", proc.pid, where
        )

    def _kill_worker(self, graceful: bool = False) -> int | None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        self.ready = False
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
            # Its last words first: a Ray bridge says why the cluster is down before it exits.
            conn = self._conn
            with contextlib.suppress(EOFError, OSError):
                while conn is not None and conn.poll(0):
                    self._on_side_message(conn.recv())
            # Died while idle (a broken install, an import that crashes, a Ray cluster that is
            # down): back off so a crash loop does not spin, doubling while it keeps dying young.
            young = time.monotonic() - self._spawned_at < 10.0
            self._quick_deaths = self._quick_deaths + 1 if young else 0
            cap = RAY_RETRY_MAX_S if self.ray else 30.0
            delay = min(cap, 0.5 * 2**self._quick_deaths) if young else 0.0
            log.warning(
                "%s: %s process %d exited with code %s; restarting it%s",
                self.name,
                "bridge" if self.ray else "worker",
                self._proc.pid,
                self._proc.exitcode,
                f" in {delay:g} s" if delay else "",
            )
            self._kill_worker()
            if self.pool._stop.wait(delay):
                return
        self._spawn_worker()

    def _on_hello(self, info: dict[str, Any]) -> None:
        self.device = info
        self.ready = True
        if self.index == 0 or self.pool.device.get("device") == "starting":
            self.pool.device = info
        if self.ray:
            self._quick_deaths = 0
            self.pool.backend_up()
        if info.get("device_warning"):
            log.warning("%s %s on %s: %s", self.name, info.get("pid"), info["device"], info["device_warning"])
        else:
            node = f" (Ray node {info['node']})" if info.get("node") else ""
            log.info(
                "%s %s on %s %s%s",
                self.name,
                info.get("pid"),
                info["device"],
                info.get("device_name", ""),
                node,
            )

    def _on_side_message(self, msg: tuple) -> bool:
        """Messages that may come at any time: hello, and a Ray bridge's "down". True if handled."""
        if msg[0] == "hello":
            self._on_hello(msg[1])
            return True
        if msg[0] == "down":
            self.ready = False
            self.pool.backend_down(msg[1])
            return True
        return False

    # -- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        pool = self.pool
        while not pool._stop.is_set():
            try:
                if not pool.ensure_recovered():
                    pool._stop.wait(DISK_RETRY_S)
                    continue
                self._ensure_worker()
                if pool._stop.is_set():
                    break
                if not pool._space_ok():
                    self._idle(DISK_RETRY_S)
                    continue
                if self.ray and not self.ready:
                    self._idle(0.2)  # a Ray lane takes a job once its actor answers
                    continue
                job = self.store.claim_next()
                if job is None:
                    self._idle()
                    continue
                resumed = job.attempts > 1
                log.info(
                    "job %s (%s): %s -> running on %s%s",
                    job.id,
                    job.kind,
                    "running" if resumed else "queued",
                    self.name,
                    f" (attempt {job.attempts}, resuming from checkpoints)" if resumed else "",
                )
                self.publish(job.id)
                self._run(job)
            except Exception as exc:  # the lane must outlive any single bad job
                if is_disk_full(exc):
                    self._on_disk_full()
                    continue
                log.exception("%s: supervisor error; restarting the worker and retrying in 1 s", self.name)
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
        pool = self.pool
        job_id, self.current_job = self.current_job, None
        reason = disk_full_reason(self.config.data_dir)
        log.error("disk full while %s: %s", f"job {job_id} ran" if job_id else "idle", reason)
        if job_id is None:
            pool.store_problem = disk_full_reason(self.config.data_dir, then="submit again")
            pool._stop.wait(DISK_RETRY_S)
            return
        self._kill_worker()
        pool.cancel_done(job_id)
        while not pool._stop.is_set():
            try:
                if self.store.finish(job_id, FAILED, message="the disk is full", error=reason):
                    log.warning("job %s: %s -> %s: %s", job_id, RUNNING, FAILED, reason)
                    self.publish(job_id)
                pool.store_problem = None
                return
            except Exception as exc:
                if not is_disk_full(exc):
                    log.exception("job %s: could not record its failure", job_id)
                    return
                if pool.reserve.release():
                    continue
                pool.store_problem = reason
                pool._stop.wait(DISK_RETRY_S)
                reason = disk_full_reason(self.config.data_dir)

    def _idle(self, wait_s: float = 0.5) -> None:
        # Read the worker's hello (or a bridge's "down") while no job runs, then sleep until woken.
        conn = self._conn
        with contextlib.suppress(EOFError, OSError):
            while conn is not None and conn.poll(0):
                self._on_side_message(conn.recv())
        self.pool._maybe_restore_reserve()
        self._wake.wait(wait_s)
        self._wake.clear()

    def _run(self, job: JobRecord) -> None:
        work_dir = job_dir(self.config.data_dir, job.id)
        # Where the worker sees the job folder: a Ray node may mount the data folder elsewhere.
        run_dir = job_dir(self.config.ray_data_dir or self.config.data_dir, job.id) if self.ray else work_dir
        self._cancel_event.clear()
        self.current_job = job.id
        self.jobs_run += 1
        t0 = time.monotonic()
        state: dict[str, Any] = {"stage": job.stage, "eta_from": None}
        kill_at: float | None = None
        params = engine_params(job, run_dir)
        with contextlib.suppress(OSError, ValueError):  # a dead worker is found below as a crash
            self._conn.send(("run", job.id, job.kind, params, str(run_dir)))
        while True:
            if self.pool._stop.is_set():
                with contextlib.suppress(Exception):  # on a full disk it stays running: still resumed
                    self.store.release(job.id)
                self.current_job = None
                log.info("job %s (%s): left running for the next server start", job.id, job.kind)
                return
            now = time.monotonic()
            if kill_at is None and self.pool.cancel_wanted(job.id):
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
            except (EOFError, OSError, AttributeError):
                exitcode = self._kill_worker()
                self._on_worker_death(job, exitcode, kill_at is not None, t0, state["stage"])
                return
            if self._handle(job, msg, work_dir, t0, state):
                return

    def _on_worker_death(
        self, job: JobRecord, exitcode: int | None, cancelling: bool, t0: float, stage: str
    ) -> None:
        """The worker process died while running ``job``: cancel, resume, requeue or fail it."""
        if cancelling:
            self._finish(job, CANCELLED, t0, message="cancelled; the worker stopped")
            return
        if self.pool._stop.is_set() or exitcode == INTERRUPTED_EXIT:
            # Stopped from outside (service stop, shutdown): not the job's fault.
            self.store.release(job.id)
            self.current_job = None
            log.info(
                "job %s (%s): worker stopped by a signal; the job resumes from its checkpoints",
                job.id,
                job.kind,
            )
            self.publish(job.id)
            return
        if self.ray:
            # The bridge (the Ray driver) died: the cluster went away under it, not the job's fault.
            message = "requeued: the Ray backend went away while it ran; it resumes from its checkpoints"
            requeued = self.store.requeue_lost(job.id, message, -1, need_progress=False)
            if self.pool.backend["status"] != "down":  # else the bridge already said why (RAY_DOWN_EXIT)
                self.pool.backend_down(
                    f"the Ray bridge process exited with code {exitcode} while job {job.id} ran; reconnecting "
                    "to the cluster (queued jobs wait, none is lost)"
                )
        else:
            # A job killed with its worker (kill -9, the OOM killer) after it made progress this
            # attempt resumes from its checkpoints on the next free worker; one that kills its
            # worker before any progress, or keeps doing so, is failed with the reason.
            how = crash_reason(exitcode, stage).split(";")[0].removeprefix("the worker process ")
            message = f"requeued: its worker process {how}; it resumes from its checkpoints"
            requeued = self.store.requeue_lost(job.id, message, self.config.max_attempts, need_progress=True)
        if requeued:
            self.pool.cancel_done(job.id)
            self.current_job = None
            log.warning("job %s (%s): %s -> queued (%s)", job.id, job.kind, RUNNING, message)
            self.publish(job.id)
            self.pool.wake()
            return
        self._finish(job, FAILED, t0, error=crash_reason(exitcode, stage), message="worker crashed")

    def _handle(self, job: JobRecord, msg: tuple, work_dir: Path, t0: float, state: dict[str, Any]) -> bool:
        """Apply one worker message; True when the job is finished."""
        kind = msg[0]
        if self._on_side_message(msg):
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
        if kind == "lost":
            # The Ray worker running it died (its node went down, or its process was killed):
            # back to the queue, to resume from its checkpoints in the shared folder on any node.
            message = f"requeued: {msg[2]}; it resumes from its checkpoints"
            if self.store.requeue_lost(job.id, message, self.config.max_attempts, need_progress=False):
                self.pool.cancel_done(job.id)
                self.current_job = None
                log.warning("job %s (%s): %s -> queued (%s)", job.id, job.kind, RUNNING, message)
                self.publish(job.id)
                self.pool.wake()
            else:
                self._finish(
                    job,
                    FAILED,
                    t0,
                    message="worker lost",
                    error=f"{msg[2]}, {self.config.max_attempts} times; it may be what kills its worker: "
                    "resubmit it with a smaller preset or output size",
                )
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
        self.pool.cancel_done(job.id)
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
        log_fn(
            "job %s (%s): %s -> %s after %.1f s on %s%s",
            job.id,
            job.kind,
            RUNNING,
            state,
            took,
            self.name,
            detail,
        )
        self.publish(job.id)
