"""Crash safety: kill -9 of the server mid-job, restart, resume from the checkpoint; clean stops."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest

from tests.server.harness import SLOW, finished, pid_alive, read_sse, wait_for

SLOW_ENV = {"KILN_SLOW_STEPS": "8", "KILN_SLOW_STEP_S": "0.4"}
pytestmark = pytest.mark.slow  # several server starts each (20-40 s on 2 cores)

REQUEST = {"kind": "slow", "prompt": "resume me", "output": {"turntable_frames": 6}}


def test_kill9_mid_run_resumes_from_checkpoint(server_factory) -> None:
    server = server_factory(["--engine", SLOW], SLOW_ENV).start()
    with server.client() as c:
        running = c.post("/v1/jobs", json=REQUEST).json()
        queued = c.post("/v1/jobs", json=REQUEST).json()
        # Wait until step 4/8 has begun: steps 0..2 are checkpointed.
        job = wait_for(c, running["id"], lambda j: j["message"].startswith(("step 4/", "step 5/")), 60)
        old_worker = c.get("/v1/info").json()["worker_pid"]
    server.kill9()

    # The orphaned worker notices its parent died and exits on its own.
    deadline = time.monotonic() + 5
    while pid_alive(old_worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(old_worker)

    server.start()
    with server.client() as c:
        after = c.get(f"/v1/jobs/{running['id']}").json()
        # Still running (resumed, not restarted from zero), and never lists half files.
        assert after["state"] == "running" and after["artifacts"] == []
        assert c.get(f"/v1/jobs/{running['id']}/artifacts/asset.glb").status_code == 409
        done = wait_for(c, running["id"], finished, 90)
        other = wait_for(c, queued["id"], finished, 90)
        assert done["state"] == other["state"] == "succeeded", (done, other)

        # Exactly the two jobs, each once.
        ids = [j["id"] for j in c.get("/v1/jobs", params={"limit": 500}).json()["jobs"]]
        assert sorted(ids) == sorted([running["id"], queued["id"]])

        # The engine's log: each step ran exactly once; the first process did at least the
        # 3 checkpointed steps, a second process did the rest (a resume, not a restart).
        record = c.get(f"/v1/jobs/{running['id']}/artifacts/attributes.json").json()
        steps = record["steps"]
        assert [s["step"] for s in steps] == list(range(8))
        pids = list(dict.fromkeys(s["pid"] for s in steps))
        assert len(pids) == 2, pids
        first_run = sum(s["pid"] == pids[0] for s in steps)
        assert 3 <= first_run < 8, first_run
        assert pids[0] == old_worker
        # The job that had not started ran once, in one process.
        other_steps = c.get(f"/v1/jobs/{queued['id']}/artifacts/attributes.json").json()["steps"]
        assert [s["step"] for s in other_steps] == list(range(8))
        assert len({s["pid"] for s in other_steps}) == 1
        # Checkpoints are gone once the job succeeded; the GLB is whole.
        assert not (server.data_dir / "jobs" / running["id"] / "checkpoints").exists()
        glb = c.get(f"/v1/jobs/{running['id']}/artifacts/asset.glb").content
        assert int.from_bytes(glb[8:12], "little") == len(glb)
    assert "resuming from checkpoints" in server.log()
    assert job["progress"] > 0


def test_clean_stop_pauses_and_resumes_without_losing_an_attempt(server_factory) -> None:
    server = server_factory(["--engine", SLOW], SLOW_ENV).start()
    with server.client() as c:
        job = c.post("/v1/jobs", json=REQUEST).json()
        wait_for(c, job["id"], lambda j: j["message"].startswith("step 3/"), 60)
        # A client watching the job by SSE while the server stops: its stream must end, not
        # hold the shutdown until the job would have finished.
        opened = c.stream("GET", f"/v1/jobs/{job['id']}/events", timeout=60)
        stream = opened.__enter__()
        watched: list = []

        def watch() -> None:
            try:
                watched.extend(read_sse(stream))
            except httpx.HTTPError as exc:  # recorded, so the assertion below shows it
                watched.append(exc)

        watcher = threading.Thread(target=watch)
        watcher.start()
        # Ctrl-C in the terminal: SIGINT to the whole process group, worker included. The worker
        # runs in its own session, so only the server sees it, shuts down and releases the job.
        t0 = time.monotonic()
        server.terminate_group(signal.SIGINT)
        stopped_in = time.monotonic() - t0
        watcher.join(10)
        opened.__exit__(None, None, None)
    assert server.proc.returncode == 0 and stopped_in < 10.0, (server.proc.returncode, stopped_in)
    assert not watcher.is_alive() and watched, watched
    assert isinstance(watched[-1], dict) and watched[-1]["state"] == "running", watched[-1]
    assert "Traceback" not in server.log()
    server.start()
    with server.client() as c:
        done = wait_for(c, job["id"], finished, 90)
        assert done["state"] == "succeeded"
        steps = c.get(f"/v1/jobs/{job['id']}/artifacts/attributes.json").json()["steps"]
        assert [s["step"] for s in steps] == list(range(8))
        assert len({s["pid"] for s in steps}) == 2
    # attempts: 1 (first start) - 1 (released on clean stop) + 1 (resume) = 1 in the store.
    import sqlite3

    with sqlite3.connect(server.data_dir / "jobs.sqlite3") as db:
        assert db.execute("SELECT attempts FROM jobs WHERE id = ?", (job["id"],)).fetchone() == (1,)


def test_job_killed_three_times_making_progress_each_time_still_succeeds(server_factory) -> None:
    # Server kills are not the job's fault: a job that got further before each kill is no poison.
    env = {"KILN_SLOW_STEPS": "10", "KILN_SLOW_STEP_S": "0.4"}
    server = server_factory(["--engine", SLOW], env).start()
    with server.client() as c:
        job = c.post("/v1/jobs", json=REQUEST).json()
    reached = 0
    for _ in range(3):
        with server.client() as c:
            # A checkpoint further than at the last kill (step n/10 starts once n-1 are saved).
            def further(j: dict, past: int = reached) -> bool:
                msg = j["message"]
                return msg.startswith("step ") and int(msg.split()[1].split("/")[0]) >= past + 3

            reached = int(wait_for(c, job["id"], further, 60)["message"].split()[1].split("/")[0])
        server.kill9()
        server.start()
    with server.client() as c:
        final = wait_for(c, job["id"], finished, 90)
        assert final["state"] == "succeeded", final
        steps = c.get(f"/v1/jobs/{job['id']}/artifacts/attributes.json").json()["steps"]
    assert [s["step"] for s in steps] == list(range(10))
    assert len({s["pid"] for s in steps}) == 4  # three resumes


def test_job_interrupted_three_times_without_progress_fails_with_reason(server_factory) -> None:
    # A job that never gets further between kills may be what kills the server: it is failed.
    server = server_factory(["--engine", SLOW], {"KILN_SLOW_STEPS": "8", "KILN_SLOW_STEP_S": "30"}).start()
    with server.client() as c:
        job = c.post("/v1/jobs", json=REQUEST).json()
        wait_for(c, job["id"], lambda j: j["message"].startswith("step 1/"), 60)
    for _ in range(3):
        server.kill9()
        server.start()
        with server.client() as c:
            now = c.get(f"/v1/jobs/{job['id']}").json()
        if now["state"] == "failed":
            break
        time.sleep(0.5)  # restarted, and killed again before step 1 (30 s) ends
    assert now["state"] == "failed", now
    assert "interrupted 3 times without making progress" in now["error"] and "smaller preset" in now["error"]
    assert json.loads(json.dumps(now))["artifacts"] == []


def test_kill9_resume_real_avatar(server_factory, avatar_model) -> None:
    # The avatar engine checkpoints its sampled tri-planes (checkpoints/avatar_planes.pt).
    # Killed after sampling, the restarted job must go straight to the asset path: no
    # "DDIM step" report after the restart, and the same request still succeeds.
    pytest.importorskip("core.pipelines.avatar")
    server = server_factory(["--avatar-weights", str(avatar_model), "--kinds", "avatar"]).start()
    request = {
        "kind": "avatar",
        "prompt": "an old man with a full beard",
        "seed": 5,
        "output": {"resolution": 64, "texture_size": 256, "turntable_frames": 4, "turntable_size": 64},
    }
    with server.client() as c:
        job = c.post("/v1/jobs", json=request).json()
        before = wait_for(c, job["id"], lambda j: j["progress"] > 0.3 or finished(j), 300)
    assert before["state"] == "running", before  # past sampling, inside the asset path
    assert (server.data_dir / "jobs" / job["id"] / "checkpoints" / "avatar_planes.pt").is_file()
    server.kill9()
    server.start()
    with server.client() as c, c.stream("GET", f"/v1/jobs/{job['id']}/events", timeout=300) as s:
        events = read_sse(s)
    assert events[-1]["state"] == "succeeded", events[-1]["error"]
    assert not any(e["message"].startswith("DDIM step") for e in events), [e["message"] for e in events]
    with server.client() as c:
        glb = c.get(f"/v1/jobs/{job['id']}/artifacts/asset.glb").content
    assert glb[:4] == b"glTF" and int.from_bytes(glb[8:12], "little") == len(glb)
