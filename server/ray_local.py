"""A single-node Ray cluster on loopback, for the tests, the benchmark and a one-box trial of --ray.

Neither this module nor the server process imports ray: the cluster is the ``ray`` command of this
venv (``ray start --head --block``), in its own process group and temp folder, so stopping it ends
exactly its processes (never another session's Ray, never ``ray stop``).

Loopback only: Ray turns ``--node-ip-address 127.0.0.1`` into the machine's routable address
(``resolve_ip_for_localhost``), so on Linux a head started with that flag still advertises, and
listens on, e.g. 192.0.2.2. With ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (the single-node mode Ray
uses on macOS and Windows) it keeps 127.0.0.1, and a driver must run with it too to connect by that
address; ``server.ray_bridge`` sets it for a ``--ray`` address on loopback.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Environment under which Ray keeps a loopback node address as it is (see the module docstring)."""
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
START_TIMEOUT_S = 60.0


def is_loopback(address: str) -> bool:
    """True for a ``host:port`` on loopback (``127.0.0.1:6379``, ``localhost:6379``, ``[::1]:6379``)."""
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """One Ray head node on 127.0.0.1 with ``cpus`` CPUs and no GPU; ``start`` again after ``stop``
    brings it back on the same address."""

    def __init__(self, cpus: int = 2) -> None:
        # Short: Ray's unix socket paths must fit in 107 bytes.
        self.tmp = Path(tempfile.mkdtemp(prefix="kray-", dir="/tmp"))
        self.port = _free_port()
        self.cpus = cpus
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.tmp / "ray-start.log"

    def start(self, timeout: float = START_TIMEOUT_S) -> LocalCluster:
        """Start the head and wait until its GCS port answers; RuntimeError with its log if not."""
        cmd = [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={self.port}",
            f"--num-cpus={self.cpus}",
            "--num-gpus=0",
            f"--temp-dir={self.tmp}",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **LOOPBACK_ENV}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}:\n{self.log()}")
            if "Ray runtime started" in self.log():
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the Ray cluster did not start in {timeout:g} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """End the cluster at once, as an outage would: SIGTERM to its process group, then SIGKILL
        to whatever is left of it after 3 s (the leader alone shuts down gracefully, 15+ s)."""
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait)
                break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the leader is gone; anything left of its group
        self.proc = None

    def close(self) -> None:
        """Stop it and remove its temp folder."""
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
