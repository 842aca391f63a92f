"""A real full disk: a small tmpfs as the data folder, filled by a job while it runs.

Needs permission to mount (root, as on CI and the developers' machines); skipped where the
machine refuses, and test_server_disk.py covers the same rules with injected faults.
"""

from __future__ import annotations

import os
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


class OffDiskLogServer(ServerProcess):
    """A server whose log is kept off the small disk (the harness puts it beside the data folder)."""

    log_dir: Path = Path(tempfile.gettempdir())

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"kiln-full-disk-server-{self.port}.log"


def test_a_disk_that_fills_mid_job_fails_it_with_the_reason_and_nothing_wedges(small_fs: Path) -> None:
    data = small_fs / "data"
    args = ["--engine", SLOW, "--engine", FAST, "--min-free-mb", "2", "--worker-threads", "1"]
    server = OffDiskLogServer(data, args, {"KILN_SLOW_STEPS": "6", "KILN_SLOW_STEP_S": "0.2"})
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
        server.log_path.unlink(missing_ok=True)


def test_start_up_on_a_full_disk_after_a_clean_stop_serves_finished_files(small_fs: Path) -> None:
    # After a clean stop SQLite has no -shm file; on a full disk it cannot make one, and even a
    # read-only open fails ("disk I/O error"): the store falls back to an immutable read.
    import sqlite3

    data = small_fs / "data"
    server = OffDiskLogServer(data, ["--engine", FAST, "--min-free-mb", "1"])
    try:
        server.start()
        with server.client() as c:
            job = wait_for(c, c.post("/v1/jobs", json={"kind": "fast"}).json()["id"], finished, 60)
        server.stop()
        with sqlite3.connect(data / "jobs.sqlite3") as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        for name in ("jobs.sqlite3-wal", "jobs.sqlite3-shm"):
            (data / name).unlink(missing_ok=True)
        fd = os.open(small_fs / "filler.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        try:  # fill the disk to the last page
            for size in (1 << 20, 4096, 512):
                try:
                    while os.write(fd, b"\0" * size):
                        pass
                except OSError:
                    pass
        finally:
            os.close(fd)
        server.start()
        with server.client() as c:
            assert c.get(job["artifacts"][0]["url"]).status_code == 200
            assert [j["id"] for j in c.get("/v1/jobs").json()["jobs"]] == [job["id"]]
            r = c.post("/v1/jobs", json={"kind": "fast"})
            assert r.status_code == 507 and r.json()["detail"].startswith("the disk is full"), r.text
            (small_fs / "filler.bin").unlink()
            deadline = time.monotonic() + 20
            while not c.get("/v1/info").json()["disk"]["accepting_jobs"] and time.monotonic() < deadline:
                time.sleep(0.2)
            r = c.post("/v1/jobs", json={"kind": "fast"})
            assert r.status_code == 201 and wait_for(c, r.json()["id"], finished, 60)["state"] == "succeeded"
        assert "Traceback" not in server.log(), server.log()[-3000:]
    finally:
        server.stop()
        server.log_path.unlink(missing_ok=True)
