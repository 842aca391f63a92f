"""A full disk: store writes failing mid-job, the free-space floor, start-up on a full data folder.

The store faults are injected (a JobStore whose writes raise SQLite's "database or disk is
full"), since a small filesystem cannot be made on every machine; the app, the supervisor
and the worker are the real ones, in this process (TestClient runs the lifespan).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.config import ServerConfig
from server.store import JobStore
from tests.server.harness import FAST, SLOW, finished, wait_for

ENGINES = dict(spec.split("=", 1) for spec in (SLOW, FAST))


class FaultyStore(JobStore):
    """A job store whose chosen calls fail as on a full disk: ``faults[method] = {call numbers}``."""

    def __init__(self, path: Path, faults: dict[str, set[int]]) -> None:
        self.faults = faults
        self.calls: dict[str, int] = {}
        super().__init__(path)

    def _maybe_fail(self, method: str) -> None:
        n = self.calls[method] = self.calls.get(method, 0) + 1
        if n in self.faults.get(method, ()):
            raise sqlite3.OperationalError("database or disk is full")

    def update_progress(self, *args: Any, **kwargs: Any) -> bool:
        self._maybe_fail("update_progress")
        return super().update_progress(*args, **kwargs)

    def finish(self, *args: Any, **kwargs: Any) -> bool:
        self._maybe_fail("finish")
        return super().finish(*args, **kwargs)


@pytest.fixture
def slow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_SLOW_STEPS", "4")
    monkeypatch.setenv("KILN_SLOW_STEP_S", "0.1")


@contextmanager
def running_app(config: ServerConfig, store: JobStore | None = None) -> Iterator[TestClient]:
    from server.app import create_app

    with TestClient(create_app(config, store), base_url="http://127.0.0.1") as client:
        yield client


def config_for(data_dir: Path, **kw: Any) -> ServerConfig:
    return ServerConfig(data_dir=data_dir, extra_engines=ENGINES, worker_threads=1, **kw)


def test_store_write_failing_mid_job_fails_it_with_the_reason_and_the_next_job_runs(
    tmp_path: Path, slow_env: None
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # The job's 3rd progress write fails, and so does the first try at recording its failure:
    # the supervisor frees its space reserve and records the reason anyway.
    store = FaultyStore(data / "jobs.sqlite3", {"update_progress": {3}, "finish": {1}})
    with running_app(config_for(data, min_free_mb=0), store) as c:
        assert (data / ".space-reserve").is_file()
        slow = c.post("/v1/jobs", json={"kind": "slow", "prompt": "fill the disk"}).json()
        fast = c.post("/v1/jobs", json={"kind": "fast"}).json()
        job = wait_for(c, slow["id"], finished, 60)
        assert job["state"] == "failed", job
        assert job["error"].startswith(f"the disk is full (data folder {data}, "), job["error"]
        assert job["error"].endswith("MB free); free space and press Resume"), job["error"]
        assert not (data / ".space-reserve").exists()  # spent on recording the failure
        assert wait_for(c, fast["id"], finished, 60)["state"] == "succeeded"
        # Space is back: Resume queues it again and it finishes.
        resumed = c.post(f"/v1/jobs/{slow['id']}/resume")
        assert resumed.status_code == 202 and resumed.json()["state"] == "queued", resumed.text
        assert wait_for(c, slow["id"], finished, 60)["state"] == "succeeded"
        assert c.post(f"/v1/jobs/{slow['id']}/resume").status_code == 409  # only failed/cancelled ones


def test_engine_disk_full_error_is_the_reason(tmp_path: Path, slow_env: None) -> None:
    # The engine's own write failing with ENOSPC (an artifact, a checkpoint) names the data folder.
    data = tmp_path / "data"
    engines = {**ENGINES, "full": "tests.server.test_server_disk:run_full_disk_job"}
    config = ServerConfig(data_dir=data, extra_engines=engines, worker_threads=1, min_free_mb=0)
    with running_app(config) as c:
        job = c.post("/v1/jobs", json={"kind": "full"}).json()
        job = wait_for(c, job["id"], finished, 60)
    assert job["state"] == "failed"
    assert (
        job["error"].startswith(f"the disk is full (data folder {data}, ") and "press Resume" in job["error"]
    )


def run_full_disk_job(job: Any, work_dir: Path, reporter: Any, settings: Any = None) -> dict[str, Path]:
    import errno

    reporter("export", 0.5, "writing")
    raise OSError(errno.ENOSPC, "No space left on device", str(work_dir / "asset.glb"))


def test_submit_below_the_floor_answers_507(tmp_path: Path) -> None:
    with running_app(config_for(tmp_path / "data", min_free_mb=10**12)) as c:
        r = c.post("/v1/jobs", json={"kind": "fast"})
        assert r.status_code == 507, r.text
        detail = r.json()["detail"]
        assert (
            detail.startswith(f"the disk is full (data folder {tmp_path / 'data'}, ") and "MB free" in detail
        )
        disk = c.get("/v1/info").json()["disk"]
        assert disk["min_free_mb"] == 10**12 and disk["accepting_jobs"] is False and disk["reason"] == detail
        assert c.get("/v1/jobs").json()["jobs"] == []


def test_startup_on_a_full_data_folder_serves_finished_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    with running_app(config_for(data, min_free_mb=0)) as c:
        done = wait_for(c, c.post("/v1/jobs", json={"kind": "fast"}).json()["id"], finished, 60)
        assert done["state"] == "succeeded"
        body = c.get(done["artifacts"][0]["url"]).content

    # The disk is now full: the store opens read-only and recovery cannot write.
    def full(self: JobStore, *args: Any) -> Any:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(JobStore, "open_for_writing", full)
    with running_app(config_for(data, min_free_mb=0)) as c:
        assert c.get("/v1/health").status_code == 200
        assert c.get(f"/v1/jobs/{done['id']}").json()["state"] == "succeeded"
        assert c.get(done["artifacts"][0]["url"]).content == body
        r = c.post("/v1/jobs", json={"kind": "fast"})
        assert r.status_code == 507 and "the disk is full" in r.json()["detail"], r.text
        assert c.get("/v1/info").json()["disk"]["accepting_jobs"] is False
        # Space comes back: the supervisor's retry opens the store and jobs are taken again.
        monkeypatch.undo()
        deadline = time.monotonic() + 20
        while not c.get("/v1/info").json()["disk"]["accepting_jobs"] and time.monotonic() < deadline:
            time.sleep(0.2)
        again = c.post("/v1/jobs", json={"kind": "fast"})
        assert again.status_code == 201, again.text
        assert wait_for(c, again.json()["id"], finished, 60)["state"] == "succeeded"


class _Trainer:
    def __init__(self, step: int) -> None:
        self.step = step

    def state_dict(self) -> dict[str, Any]:
        import torch

        return {"step": self.step, "weights": torch.arange(4096, dtype=torch.float32) + self.step}


def test_a_checkpoint_write_failing_leaves_the_previous_checkpoint_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    torch = pytest.importorskip("torch")
    from core.pipelines import text_to_3d

    folder = tmp_path / "checkpoints"
    text_to_3d._save_checkpoint(folder, _Trainer(100), "fp", 0.5)
    real_save = torch.save

    def disk_fills(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        # What a full disk does to torch.save: part of the file written, then its enforce error.
        f.write(b"PK\x03\x04" + b"\0" * 500)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 768 vs 662")

    monkeypatch.setattr(torch, "save", disk_fills)
    with pytest.raises(OSError) as err:
        text_to_3d._save_checkpoint(folder, _Trainer(200), "fp", 0.4)
    assert err.value.errno == errno.ENOSPC and "step_0000200.pt" in str(err.value)
    monkeypatch.setattr(torch, "save", real_save)
    # No half file under any name; the previous checkpoint is what a resume loads.
    assert sorted(p.name for p in folder.iterdir()) == ["step_0000100.pt"]
    path, state = text_to_3d._load_checkpoint(folder, "cpu")
    assert path.name == "step_0000100.pt" and state["step"] == 100 and state["fingerprint"] == "fp"
    # A checkpoint cut short by an older, non-atomic write is skipped for the one before it.
    (folder / "step_0000300.pt").write_bytes(b"PK\x03\x04truncated")
    path, state = text_to_3d._load_checkpoint(folder, "cpu")
    assert path.name == "step_0000100.pt" and state["step"] == 100
    # And the server's worker names the full disk for what write_atomic raises.
    from server.worker import _reason

    assert _reason(err.value, "text_to_3d", tmp_path / "jobs" / "abc").startswith(
        f"the disk is full (data folder {tmp_path}, "
    )
