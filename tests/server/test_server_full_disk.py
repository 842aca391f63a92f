"""A real full disk: a small tmpfs as the data folder, filled by a job while it runs.

Needs permission to mount (root, as on CI and the developers' machines); skipped where the
machine refuses, and test_server_disk.py covers the same rules with injected faults.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.harness import FAST, SLOW, ServerProcess, finished, wait_for

pytestmark = pytest.mark.slow  # two server starts on a filesystem that fills up


@pytest.fixture
def small_fs() -> Iterator[Path]:
    mount = Path(tempfile.mkdtemp(prefix="kiln-full-disk-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a small filesystem here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        shutil.rmtree(mount, ignore_errors=True)


def test_a_disk_that_fills_mid_job_fails_it_with_the_reason_and_nothing_wedges(small_fs: Path) -> None:
    data = small_fs / "data"
    args = ["--engine", SLOW, "--engine", FAST, "--min-free-mb", "2", "--worker-threads", "1"]
    server = ServerProcess(data, args, {"KILN_SLOW_STEPS": "6", "KILN_SLOW_STEP_S": "0.2"})
    # The log lives beside the data folder; keep it off the small disk.
    log_dir = Path(tempfile.mkdtemp(prefix="kiln-full-disk-log-"))
    server.data_dir = data
    ServerProcess.log_path = property(lambda self: log_dir / f"server-{self.port}.log")  # type: ignore[assignment]
    try:
        server.start()
        with server.client() as c:
            fast = wait_for(c, c.post("/v1/jobs", json={"kind": "fast"}).json()["id"], finished, 60)
            assert fast["state"] == "succeeded"
            job = c.post("/v1/jobs", json={"kind": "slow", "prompt": "__fill__"}).json()
            failed = wait_for(c, job["id"], finished, 60)
            assert failed["state"] == "failed", failed
            assert failed["error"].startswith(f"the disk is full (data folder {data}, "), failed["error"]
            assert failed["error"].endswith("free space and press Resume")
            # Below the floor: submissions get 507 with the reason, not a plain-text 500.
            r = c.post("/v1/jobs", json={"kind": "fast"})
            assert r.status_code == 507 and r.json()["detail"].startswith("the disk is full"), r.text
        # A hard kill and a restart on the full disk: it starts, serves finished files, refuses jobs.
        server.kill9()
        server.start()
        with server.client() as c:
            url = fast["artifacts"][0]["url"]
            assert c.get(url).status_code == 200
            assert c.get(f"/v1/jobs/{job['id']}").json()["state"] == "failed"
            r = c.post("/v1/jobs", json={"kind": "fast"})
            assert r.status_code == 507 and "the disk is full" in r.json()["detail"], r.text
            # Space comes back: jobs are taken again, and Resume finishes the failed one.
            (data / "jobs" / job["id"] / "filler.bin").unlink()
            deadline = time.monotonic() + 20
            while not c.get("/v1/info").json()["disk"]["accepting_jobs"] and time.monotonic() < deadline:
                time.sleep(0.2)
            r = c.post(f"/v1/jobs/{job['id']}/resume")
            assert r.status_code == 202, r.text
            assert wait_for(c, job["id"], finished, 60)["state"] == "succeeded"
            nxt = c.post("/v1/jobs", json={"kind": "fast"})
            assert (
                nxt.status_code == 201 and wait_for(c, nxt.json()["id"], finished, 60)["state"] == "succeeded"
            )
        assert "Traceback" not in server.log(), server.log()[-3000:]
    finally:
        server.stop()
        del ServerProcess.log_path
        shutil.rmtree(log_dir, ignore_errors=True)
