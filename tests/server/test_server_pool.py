"""The local worker pool (issue 14): several workers, one store, each job run exactly once."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from server.devices import plan_workers
from server.store import QUEUED, RUNNING, JobStore
from tests.server.harness import FAST, REPO, SLOW, finished, pid_alive, private_tmp, wait_for

POOL_ENV = {"KILN_SLOW_STEPS": "6", "KILN_SLOW_STEP_S": "0.3"}


# -- the store: claims under contention ---------------------------------------------------------


def test_one_job_claimed_by_many_at_once_runs_once() -> None:
    store = JobStore(private_tmp() / "jobs.sqlite3")
    job = store.create("fast", {"prompt": "race"})
    threads, got = 16, []
    barrier = threading.Barrier(threads)

    def claim() -> None:
        barrier.wait()  # all threads (each with its own SQLite connection) claim at the same moment
        got.append(store.claim_next())

    pool = [threading.Thread(target=claim) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
    claimed = [j for j in got if j is not None]
    assert len(got) == threads and len(claimed) == 1, got
    assert claimed[0].id == job.id and claimed[0].attempts == 1
    after = store.get(job.id)
    assert after is not None and after.state == RUNNING and after.attempts == 1


def test_many_jobs_many_claimers_each_job_once() -> None:
    store = JobStore(private_tmp() / "jobs.sqlite3")
    ids = {store.create("fast", {"prompt": f"job {i}"}).id for i in range(60)}
    claims: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        while (job := store.claim_next()) is not None:
            with lock:
                claims.append(job.id)

    pool = [threading.Thread(target=worker) for _ in range(8)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    assert sorted(claims) == sorted(ids)  # every job claimed, none twice
    assert store.count(QUEUED) == 0 and store.count(RUNNING) == 60


def test_requeue_lost_needs_progress_and_is_bounded() -> None:
    store = JobStore(private_tmp() / "jobs.sqlite3")
    job = store.create("slow", {})
    store.claim_next()
    # No progress this attempt: not requeued (the caller fails it, as a crash always did).
    assert not store.requeue_lost(job.id, "lost", 3, need_progress=True)
    store.update_progress(job.id, "optimise", 0.3, "step 2", None)
    assert store.requeue_lost(job.id, "lost", 3, need_progress=True)
    again = store.get(job.id)
    assert again is not None and again.state == QUEUED and again.message == "lost"
    # Requeued at most max_crashes times, then the caller fails it.
    for _ in range(2):
        store.claim_next()
        assert store.requeue_lost(job.id, "lost", 3, need_progress=False)
    store.claim_next()
    assert not store.requeue_lost(job.id, "lost", 3, need_progress=False)
    # Backend trouble (max_crashes < 0) is not counted against the job.
    assert store.requeue_lost(job.id, "backend down", -1, need_progress=False)


# -- device plan ------------------------------------------------------------------------------


def test_plan_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert plan_workers(None, None) == ["0", "1"]  # one worker per visible GPU
    assert plan_workers(3, None) == ["0", "1", "0"]  # spread round-robin
    assert plan_workers(None, ("0", "1", "3")) == ["0", "1", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert plan_workers(None, None) == [None]  # CPU-only: one worker
    assert plan_workers(2, None) == [None, None]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert plan_workers(None, None) == [None]


def test_server_without_ray_never_imports_it(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from server.config import ServerConfig\n"
        "from server.__main__ import config_from_args\n"
        "from server.app import create_app\n"
        f"create_app(ServerConfig(data_dir={str(tmp_path)!r}))\n"
        "config_from_args(['--workers', '2'])\n"
        "assert 'ray' not in sys.modules, 'ray imported'\n"
        "print('no ray')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "no ray" in out.stdout, out.stderr[-2000:]


# -- two real workers -------------------------------------------------------------------------


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


@pytest.mark.slow
def test_two_workers_eight_jobs_each_once_and_kill9_requeues(server_factory) -> None:
    server = server_factory(["--engine", SLOW, "--workers", "2", "--worker-threads", "1"], POOL_ENV).start()
    with server.client() as c:
        info = c.get("/v1/info").json()
        workers = info["workers"]
        assert [w["index"] for w in workers] == [0, 1] and all(w["backend"] == "local" for w in workers)
        assert info["backend"] == {"kind": "local", "address": None, "status": "up", "message": None}
        pids = {w["pid"] for w in workers}
        assert len(pids) == 2 and None not in pids
        jobs = [
            c.post("/v1/jobs", json={"kind": "slow", "prompt": f"pool {i}", "seed": i}).json()["id"]
            for i in range(8)
        ]
        # Both workers run a job at once, and /v1/info says which runs which.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = {w["running"] for w in c.get("/v1/info").json()["workers"]} - {None}
            if len(running) == 2:
                break
            time.sleep(0.05)
        assert len(running) == 2, c.get("/v1/info").json()["workers"]
        # kill -9 one worker in the middle of its job (steps 0..1 checkpointed).
        victim = wait_for(c, jobs[0], lambda j: j["message"].startswith(("step 3/", "step 4/")), 60)
        lane = next(w for w in c.get("/v1/info").json()["workers"] if w["running"] == victim["id"])
        os.kill(lane["pid"], signal.SIGKILL)
        done = [wait_for(c, job_id, finished, 120) for job_id in jobs]
        assert [j["state"] for j in done] == ["succeeded"] * 8, [(j["state"], j["error"]) for j in done]
        records = [c.get(f"/v1/jobs/{job_id}/artifacts/attributes.json").json() for job_id in jobs]
        info = c.get("/v1/info").json()
        server_pid = server.proc.pid
    # Each job ran exactly once: every step once, in order (a resume continues, never restarts).
    for record in records:
        assert [s["step"] for s in record["steps"]] == list(range(6)), record["steps"]
    # The killed job resumed in a new worker from its checkpoint.
    killed = records[0]["steps"]
    assert killed[0]["pid"] == lane["pid"] and killed[-1]["pid"] != lane["pid"]
    assert 2 <= sum(s["pid"] == lane["pid"] for s in killed) < 6
    # Both original workers ran jobs; the killed one was replaced (same lane, new process).
    used = {s["pid"] for r in records for s in r["steps"]}
    assert pids <= used, (pids, used)
    assert not pid_alive(lane["pid"])
    assert sum(w["jobs_run"] for w in info["workers"]) >= 9  # 8 jobs, one of them twice
    assert "requeued: its worker process killed by SIGKILL" in server.log()
    # ray is never loaded by a server started without --ray (nor by its workers).
    assert "_raylet" not in _maps(server_pid)
    assert not any("_raylet" in _maps(w["pid"]) for w in info["workers"] if w["pid"])


@pytest.mark.slow
def test_gpus_pin_each_worker(server_factory) -> None:
    # No GPU here: CUDA numbers the worker cannot see make it a CPU worker, but the pinning shows.
    server = server_factory(["--engine", FAST, "--gpus", "5,7"]).start()
    with server.client() as c:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            workers = c.get("/v1/info").json()["workers"]
            if all(w["cuda_visible_devices"] for w in workers):
                break
            time.sleep(0.1)
        assert [(w["gpu"], w["cuda_visible_devices"]) for w in workers] == [("5", "5"), ("7", "7")], workers
        ids = [c.post("/v1/jobs", json={"kind": "fast", "seed": i}).json()["id"] for i in range(6)]
        seen = set()
        for job_id in ids:
            assert wait_for(c, job_id, finished, 60)["state"] == "succeeded"
            seen.add(c.get(f"/v1/jobs/{job_id}/artifacts/attributes.json").json()["cuda_visible_devices"])
        assert seen <= {"5", "7"} and seen


# -- a batch gains from the pool with no change on the client's side (issue 14, item 3) -----------


def test_addon_batch_of_avatars_runs_side_by_side_on_two_workers(server_factory, avatar_model) -> None:
    """The add-on's batch (``runtime.run_many``) starts one ``JobThread`` per prompt at once; this
    drives the same client code without Blender's scene and checks a 2-worker server overlaps them."""
    from blender_addon.client import KilnClient
    from blender_addon.jobflow import JobSpec, JobThread, JobUpdate
    from blender_addon.protocol import JobRequest, OutputOptions

    args = [
        "--avatar-weights",
        str(avatar_model),
        "--kinds",
        "avatar",
        "--workers",
        "2",
        "--worker-threads",
        "1",
    ]
    server = server_factory(args).start()
    out = private_tmp()
    # As the batch builds its requests (blender_addon/cli.py: no server-side turntable).
    output = OutputOptions(resolution=64, texture_size=256, turntable_frames=0)
    prompts = ["a woman with a red bob", "an old man with a grey beard", "a boy with a cap", "a bald man"]
    threads = [
        JobThread(
            KilnClient(server.base_url),
            JobSpec(request=JobRequest("avatar", p, seed=i, output=output), out_dir=out, file_stem=f"a{i}"),
            poll_interval=0.2,
        ).start()
        for i, p in enumerate(prompts)
    ]
    finals: dict[int, JobUpdate] = {}
    both_busy: set[tuple[int, str]] = set()  # (worker index, job id) seen while both workers ran
    deadline = time.monotonic() + 120
    try:
        with server.client() as c:
            while len(finals) < len(threads) and time.monotonic() < deadline:
                for i, thread in enumerate(threads):
                    finals.update((i, u) for u in thread.drain() if u.done)
                info = c.get("/v1/info").json()
                running = [(w["index"], w["running"]) for w in info["workers"] if w["running"]]
                if len(running) == 2:
                    both_busy.update(running)
                time.sleep(0.1)
            assert len(finals) == len(threads), f"batch not done in time: {len(finals)}/{len(threads)}"
            assert all(u.ok for u in finals.values()), [u.error for u in finals.values()]
            assert all(u.files["asset.glb"].read_bytes()[:4] == b"glTF" for u in finals.values())
            jobs = [c.get(f"/v1/jobs/{finals[i].job.id}").json() for i in range(len(threads))]
            workers = c.get("/v1/info").json()["workers"]
    finally:
        for thread in threads:
            thread.cancel()  # only those still running (a batch that timed out)
        shutil.rmtree(out, ignore_errors=True)
    # Two jobs of the batch ran at the same time (the server's own clock) ...
    spans = [
        (datetime.fromisoformat(j["started_at"]), datetime.fromisoformat(j["finished_at"])) for j in jobs
    ]
    overlaps = [
        (a, b)
        for a in range(len(spans))
        for b in range(a)
        if spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]
    ]
    assert overlaps, spans
    # ... on different workers, and each worker ran some of the four.
    assert {index for index, _ in both_busy} == {0, 1}, both_busy
    assert [w["jobs_run"] > 0 for w in workers] == [True, True] and sum(w["jobs_run"] for w in workers) == 4
