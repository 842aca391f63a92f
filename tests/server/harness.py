"""Test harness: a real Kiln server on loopback (`python -m server` subprocess) and httpx helpers."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
SLOW = "slow=tests.server.slow_engine:run_slow_job"
FAST = "fast=tests.server.slow_engine:run_fast_job"
PHOTO = "photo_avatar=tests.server.slow_engine:run_slow_job"
TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass(frozen=True)
class EngineCase:
    """One engine the lifecycle tests run: its kind, a request for it, and which server runs it."""

    kind: str
    request: dict[str, Any]
    timeout_s: float
    server: str
    """Name of the fixture giving the server that runs this kind."""


def shipped_avatar_model() -> Path | None:
    """The avatar model folder the engine would load by default, if its files exist."""
    folder = Path(os.environ.get("KILN_AVATAR_MODEL") or REPO / "core" / "avatar" / "model" / "weights")
    return folder if (folder / "model.safetensors").is_file() and (folder / "model.json").is_file() else None


def engine_cases() -> list[Any]:
    """The checkpointed test engine, and the real avatar engine once core/pipelines/avatar.py exists.

    The avatar engine runs with the shipped model when its files are in the repo, else with a
    model trained for seconds (the "smoke" preset) by the ``avatar_server`` fixture.
    """
    slow = {"kind": "slow", "prompt": "a sphere", "output": {"turntable_frames": 12}}
    cases: list[Any] = [pytest.param(EngineCase("slow", slow, 60, "shared_server"), id="slow")]
    if importlib.util.find_spec("core.pipelines.avatar") is not None:
        request = {
            "kind": "avatar",
            "prompt": "a woman with a red bob and round glasses",
            "seed": 3,
            "output": {"resolution": 64, "texture_size": 256, "turntable_frames": 8, "turntable_size": 64},
        }
        case = EngineCase("avatar", request, 600, "avatar_server")
        cases.append(pytest.param(case, id="avatar", marks=pytest.mark.slow))
    return cases


def private_tmp() -> Path:
    """A temp folder pytest's own clean-up of old runs never touches (other sessions run pytest too)."""
    return Path(tempfile.mkdtemp(prefix="kiln-server-test-"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    """One `python -m server` subprocess with its own data folder and log file."""

    data_dir: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    token: str | None = None
    proc: subprocess.Popen | None = None
    worker_pids: list[int] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"server-{self.port}.log"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "server",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
            *self.args,
        ]

    def start(self, timeout: float = 60.0) -> ServerProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO), **self.env}
        with open(self.log_path, "ab") as log:
            # Own session, like a service: terminate_group() signals it as systemd or a shell would.
            self.proc = subprocess.Popen(
                self.command(),
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/v1/health", timeout=1.0).status_code == 200:
                    info = self.info()
                    pid = info.get("worker_pid")
                    if pid:
                        self.worker_pids.append(pid)
                    # Every local worker of a pool (Ray actors are the cluster's to end).
                    self.worker_pids += [
                        w["pid"]
                        for w in info.get("workers", [])
                        if w.get("pid") and w.get("backend") == "local"
                    ]
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not answer within {timeout} s:\n{self.log()}")

    def info(self) -> dict[str, Any]:
        with self.client() as c:
            return c.get("/v1/info").json()

    def client(self, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30.0, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate_group(self, sig: int = signal.SIGTERM) -> None:
        """Signal the server's whole process group (Ctrl-C in a terminal, `timeout`, a service stop)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        # A worker must never outlive its server; kill any that did so no test leaves one behind.
        for pid in self.worker_pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (zombies count as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(
    client: httpx.Client, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 60.0
) -> dict[str, Any]:
    """Poll a job until ``until(job)`` holds; fail the test with the last state otherwise."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if until(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach the expected state in {timeout} s; last: {job}")


def finished(job: dict[str, Any]) -> bool:
    return job["state"] in TERMINAL


def read_sse(response: httpx.Response) -> list[dict[str, Any]]:
    """All `event: job` payloads of a stream, until the server closes it."""
    events, name, data = [], None, []
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "":
            if name == "job" and data:
                events.append(json.loads("\n".join(data)))
            name, data = None, []
    return events
