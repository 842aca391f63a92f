"""Run bpy scripts in fresh processes (own user folders) and a real Kiln server on loopback.

Each Blender test runs its bpy part in a subprocess: bpy keeps global state per process, and a
process that exits with add-on panels still registered does not exit, so the script's epilogue
ends it with os._exit after writing its measurements as JSON for the test to assert on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
BPY_PYTHON = os.environ.get("KILN_TEST_BPY_PYTHON") or sys.executable
"""Interpreter for the bpy scripts; point it at another venv to run them on another Blender (e.g. 5.0)."""
TEST_ENGINE = "kiln_test_box=tests.blender.kiln_test_engine:run_job"

requires_bpy = [
    pytest.mark.blender,
    pytest.mark.skipif(
        importlib.util.find_spec("bpy") is None and "KILN_TEST_BPY_PYTHON" not in os.environ,
        reason="needs the bpy module (pip install bpy)",
    ),
]

_PRELUDE = """
import json, os, sys, traceback
sys.path.insert(0, {repo!r})
import bpy
"""

_EPILOGUE = """
try:
    _result = main()
    _code = 0
except BaseException:
    traceback.print_exc()
    _result, _code = {{"error": traceback.format_exc()}}, 3
with open({result!r}, "w") as _fh:
    json.dump(_result, _fh, default=str)
sys.stdout.flush()
sys.stderr.flush()
os._exit(_code)
"""


@dataclass
class BpyRun:
    returncode: int
    stdout: str
    stderr: str
    data: dict[str, Any]


def run_bpy(body: str, tmp_path: Path, timeout: float = 300, env: dict[str, str] | None = None) -> BpyRun:
    """Run ``body`` (which defines ``main() -> dict``) under bpy; returns its dict and output."""
    result = tmp_path / "result.json"
    script = tmp_path / "bpy_script.py"
    script.write_text(
        _PRELUDE.format(repo=str(REPO)) + textwrap.dedent(body) + _EPILOGUE.format(result=str(result))
    )
    user = tmp_path / "blender_user"
    full_env = {**os.environ, "BLENDER_USER_RESOURCES": str(user), "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run(
        [BPY_PYTHON, str(script)],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    data = json.loads(result.read_text()) if result.exists() else {}
    if proc.returncode == 3 or "error" in data:
        pytest.fail(f"bpy script raised:\n{data.get('error', '')}\n--- stderr ---\n{proc.stderr[-4000:]}")
    return BpyRun(proc.returncode, proc.stdout, proc.stderr, data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class KilnServer:
    """``python -m server`` on loopback in its own process group (its workers die with it)."""

    data_dir: Path
    engines: tuple[str, ...] = (TEST_ENGINE,)
    env: dict[str, str] = field(default_factory=dict)
    extra_args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> KilnServer:
        cmd = [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--data-dir", str(self.data_dir)]
        for engine in self.engines:
            cmd += ["--engine", engine]
        cmd += list(self.extra_args)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir.parent / f"server-{self.port}.log", "w")  # noqa: SIM115 (lives with the process)
        env = {**os.environ, "PYTHONPATH": str(REPO), **self.env}
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the Kiln server exited with {self.proc.returncode}: {self.log()[-2000:]}"
                )
            try:
                if http_json(self.url + "/v1/health", 1.0).get("status") == "ok":
                    return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the Kiln server did not answer within {timeout} s: {self.log()[-2000:]}")

    def log(self) -> str:
        path = self.data_dir.parent / f"server-{self.port}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kinds(self) -> list[str]:
        return list(http_json(self.url + "/v1/info").get("kinds", []))

    def kill(self) -> None:
        """SIGKILL the server and its workers (a crash, not a clean stop)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()
