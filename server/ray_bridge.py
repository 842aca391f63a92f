"""The Ray backend (``--ray auto|ADDRESS``): a bridge process per lane, and the actor it runs jobs on.

The server process never imports ray (this module imports it only inside the functions that
run in the bridge, the probe and the actor). Each lane of the pool (server/supervisor.py) spawns
one bridge process instead of a local worker. The bridge is a Ray driver: it connects to the
cluster, creates one long-lived actor that asks for a GPU (or CPUs), and speaks the local worker's
pipe protocol (server/worker.py) to the lane, so claims, cancel, progress and the store stay
exactly as for local workers:

- ``("run", ...)`` from the lane -> ``actor.run`` (the same ``server.worker.run_one`` and so the
  same ``core.pipelines.jobs.run_job`` contract as a local worker);
- progress: the actor buffers its Reporter's events, the bridge drains them every 0.1 s and sends
  ``("progress", ...)``; a cancel (the lane's Event) becomes ``actor.cancel``, read by the job's
  Reporter at its next report;
- the job folder is in the server's data folder, which every node mounts (the same path, or
  ``--ray-data-dir``): artifacts and checkpoints are written there, so a job resumes from its last
  checkpoint on any node;
- the actor dies (its node went down, its process was killed): ``("lost", job_id, why)``, the lane
  requeues the job and the bridge makes a new actor, which Ray places on a live node;
- the cluster stops answering: ``("down", message)`` and exit ``RAY_DOWN_EXIT``; the lane requeues
  a running job (not counted against it), reports the backend down and reconnects with a back-off.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from server.ray_local import LOOPBACK_ENV, is_loopback

RAY_DOWN_EXIT = 69
"""Exit status of a bridge whose Ray cluster does not answer (EX_UNAVAILABLE)."""
HEALTH_S = 1.0
"""How often an idle bridge checks that the cluster and its actor answer."""
DRAIN_S = 0.1
"""How often a bridge fetches a running job's progress from its actor."""
CALL_TIMEOUT_S = 10.0
"""Longest wait for a small actor call (progress, ping)."""

log = logging.getLogger("kiln.ray")


class BackendDown(Exception):
    """The Ray cluster cannot be reached; the message says what to do."""


def _gcs_address(address: str) -> str:
    """``host:port`` of the cluster's GCS, resolving ``auto`` as ``ray.init`` would."""
    if address != "auto":
        return address
    try:
        from ray._private.services import canonicalize_bootstrap_address

        found = canonicalize_bootstrap_address("auto")
    except Exception as exc:  # no cluster on this machine
        raise BackendDown(
            f"--ray auto found no Ray cluster on this machine ({exc}); start one with 'ray start --head' "
            "or pass --ray HOST:PORT"
        ) from None
    if not found:
        raise BackendDown(
            "--ray auto found no Ray cluster on this machine; start one with 'ray start --head'"
        )
    return found


def _check_gcs(address: str) -> None:
    """Raise BackendDown unless the cluster's GCS port accepts a connection."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=2.0):
            return
    except (OSError, ValueError) as exc:
        raise BackendDown(
            f"the Ray cluster at {address} does not answer ({exc}); queued jobs wait and none is lost. "
            "Start the cluster (ray start --head) or fix --ray; the server reconnects by itself"
        ) from None


def _connect(opts: dict[str, Any]) -> tuple[Any, str]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # A driver whose cluster is gone is killed by Ray after this long; the lane then reconnects.
    os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", "5")
    given = os.environ.get("RAY_ADDRESS", "") if opts["address"] == "auto" else opts["address"]
    if is_loopback(given):
        # Connect by 127.0.0.1 itself: Ray would swap it for this machine's routable address,
        # where a loopback-only cluster does not listen (server/ray_local.py). Before ray is imported.
        for name, value in LOOPBACK_ENV.items():
            os.environ.setdefault(name, value)
    address = _gcs_address(opts["address"])
    _check_gcs(address)
    import ray

    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True, configure_logging=False)
    except Exception as exc:
        raise BackendDown(f"cannot connect to the Ray cluster at {address}: {exc}") from None
    return ray, address


def _gpus_per_job(ray: Any, opts: dict[str, Any]) -> float:
    if opts.get("gpus_per_job") is not None:
        return float(opts["gpus_per_job"])
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def probe_main(conn: Any, opts: dict[str, Any]) -> None:
    """How many jobs the cluster runs at once: ``("slots", n)``, or ``("down", why)``."""
    try:
        ray, _ = _connect(opts)
        resources = ray.cluster_resources()
        gpus = _gpus_per_job(ray, opts)
        if gpus > 0:
            slots = int(resources.get("GPU", 0) // gpus)
        else:
            slots = int(resources.get("CPU", 1) // float(opts.get("cpus_per_job") or 1.0))
        conn.send(("slots", max(1, slots)))
        ray.shutdown()
    except BackendDown as exc:
        conn.send(("down", str(exc)))
    except Exception as exc:
        conn.send(("down", f"{type(exc).__name__}: {exc}"))


class JobActor:
    """Runs one job at a time on a Ray node (made a Ray actor by the bridge, threaded so that
    progress and cancel calls are served while ``run`` works)."""

    def __init__(self, extra_engines: dict[str, str], settings: Any) -> None:
        from core.pipelines import jobs

        for kind, target in extra_engines.items():
            jobs.register_engine(kind, target)
        self._settings = settings
        self._events: list[tuple[str, float, str]] = []
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        try:
            import torch

            if settings is not None and settings.threads:
                torch.set_num_threads(int(settings.threads))
        except ImportError:
            pass

    def hello(self) -> dict[str, Any]:
        import ray

        from server.worker import detect_device

        info = {"pid": os.getpid(), **detect_device(), "gpu": os.environ.get("CUDA_VISIBLE_DEVICES") or None}
        context = ray.get_runtime_context()
        info["node"] = f"{ray.util.get_node_ip_address()} {context.get_node_id()[:12]}"
        return info

    def _report(self, event: Any) -> None:
        with self._lock:
            self._events.append((event.stage, float(event.fraction), event.message))

    def drain(self) -> list[tuple[str, float, str]]:
        with self._lock:
            events, self._events = self._events, []
        return events

    def cancel(self) -> None:
        self._cancel.set()

    def run(self, job_id: str, kind: str, params: dict[str, Any], work_dir: str) -> tuple:
        from core.progress import Reporter
        from server.worker import PROGRESS_INTERVAL_S, run_one

        self._cancel.clear()
        folder = Path(work_dir)
        data_dir = folder.parent.parent
        if not data_dir.is_dir():
            import ray

            return (
                "failed",
                f"the Ray node {ray.util.get_node_ip_address()} cannot see the server's data folder {data_dir}: "
                "mount it there on every node (or pass --ray-data-dir with where nodes mount it)",
            )
        reporter = Reporter(self._report, self._cancel.is_set, min_interval=PROGRESS_INTERVAL_S)
        outcome = run_one(job_id, kind, params, folder, reporter, self._settings)
        if outcome[0] == "done":
            # Paths relative to the job folder: the server reads them under its own data folder.
            files = {}
            for name, raw in outcome[1].items():
                path = Path(raw) if Path(raw).is_absolute() else folder / raw
                files[name] = os.path.relpath(path, folder) if path.is_relative_to(folder) else raw
            outcome = ("done", files)
        return outcome


def _send(conn: Any, msg: tuple) -> None:
    try:
        conn.send(msg)
    except (BrokenPipeError, EOFError, OSError):
        os._exit(0)


def bridge_main(
    conn: Any,
    cancel_event: Any,
    extra_engines: dict[str, str],
    parent_pid: int,
    settings: Any,
    opts: dict[str, Any],
) -> None:
    """Entry point of a bridge process (``multiprocessing`` target); see the module docstring."""
    from server.worker import _detach_and_handle_term, _watch_parent

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s ray-bridge: %(message)s")
    _detach_and_handle_term()
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="watch-parent").start()

    def down(exc: BaseException) -> None:
        _send(conn, ("down", str(exc)))
        os._exit(RAY_DOWN_EXIT)

    try:
        ray, address = _connect(opts)
    except BackendDown as exc:
        down(exc)
    from ray.exceptions import GetTimeoutError, RayActorError, RayError

    gpus = _gpus_per_job(ray, opts)
    actor_class = ray.remote(JobActor).options(
        num_cpus=float(opts.get("cpus_per_job") or 1.0),
        num_gpus=gpus,
        max_concurrency=4,
        max_restarts=0,
        runtime_env={"env_vars": dict(opts.get("env_vars") or {})},
    )

    def new_actor() -> Any:
        """An actor that answered hello; waits (checking the cluster) while Ray finds it a slot."""
        actor = actor_class.remote(extra_engines, settings)
        ref = actor.hello.remote()
        while True:
            ready, _ = ray.wait([ref], timeout=HEALTH_S)
            if ready:
                break
            try:
                _check_gcs(address)
            except BackendDown as exc:
                down(exc)
        try:
            info = ray.get(ref)
        except RayError as exc:
            try:
                _check_gcs(address)
            except BackendDown as down_exc:
                down(down_exc)
            raise BackendDown(f"the Ray actor for Kiln jobs could not start: {exc}") from None
        _send(conn, ("hello", info))
        return actor

    try:
        actor = new_actor()
    except BackendDown as exc:
        down(exc)

    def lost(job_id: str, exc: BaseException) -> Any:
        """The actor died under a job: down if the cluster is gone, else requeue it and replace the actor."""
        try:
            _check_gcs(address)
        except BackendDown as down_exc:
            down(down_exc)
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        _send(conn, ("lost", job_id, f"the Ray worker running it died ({type(exc).__name__}: {first})"))
        try:
            return new_actor()
        except BackendDown as down_exc:
            down(down_exc)

    while True:
        try:
            if not conn.poll(HEALTH_S):
                _check_gcs(address)
                try:
                    ray.get(actor.drain.remote(), timeout=CALL_TIMEOUT_S)
                except RayActorError:
                    actor = new_actor()  # died while idle: a fresh one, on a live node
                except GetTimeoutError:
                    pass
                continue
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the lane closed the pipe: server stopping
        except BackendDown as exc:
            down(exc)
        if msg[0] != "run":
            continue
        _, job_id, kind, params, work_dir = msg
        ref = actor.run.remote(job_id, kind, params, work_dir)
        asked_cancel = False
        checked = time.monotonic()
        try:
            while True:
                ready, _ = ray.wait([ref], timeout=DRAIN_S)
                try:
                    events = ray.get(actor.drain.remote(), timeout=CALL_TIMEOUT_S)
                except GetTimeoutError:
                    events = []
                for stage, fraction, message in events:
                    _send(conn, ("progress", job_id, stage, fraction, message))
                if ready:
                    outcome = ray.get(ref)
                    _send(conn, (outcome[0], job_id, *outcome[1:]))
                    break
                if cancel_event.is_set() and not asked_cancel:
                    actor.cancel.remote()
                    asked_cancel = True
                if time.monotonic() - checked > HEALTH_S:
                    checked = time.monotonic()
                    _check_gcs(address)
        except BackendDown as exc:
            down(exc)
        except RayActorError as exc:
            actor = lost(job_id, exc)
        except RayError as exc:  # anything else Ray raises for the call: the job failed, say why
            _send(conn, ("failed", job_id, f"the Ray backend failed the job: {type(exc).__name__}: {exc}"))
