"""Failure paths: worker crash, engine errors, a job that ignores cancel; the server keeps serving."""

from __future__ import annotations

import os
import signal
import time

import httpx

from tests.server.harness import ServerProcess, finished, wait_for


def test_worker_crash_fails_job_and_restarts_worker(
    client: httpx.Client, shared_server: ServerProcess
) -> None:
    before = client.get("/v1/info").json()["worker_pid"]
    job = client.post("/v1/jobs", json={"kind": "slow", "prompt": "__crash__"}).json()
    job = wait_for(client, job["id"], finished, 60)
    assert job["state"] == "failed" and job["artifacts"] == []
    # The reason names the signal, the stage, and what to do.
    assert "killed by SIGKILL" in job["error"] and "'optimise'" in job["error"], job["error"]
    assert "worker was restarted" in job["error"] and "Resubmit" in job["error"]
    # A new worker takes the next job.
    nxt = wait_for(client, client.post("/v1/jobs", json={"kind": "fast"}).json()["id"], finished)
    assert nxt["state"] == "succeeded"
    after = client.get("/v1/info").json()["worker_pid"]
    assert after is not None and after != before
    assert f"job {job['id']} (slow): running -> failed" in shared_server.log()


def test_engine_job_error_is_the_reason(client: httpx.Client) -> None:
    job = client.post("/v1/jobs", json={"kind": "slow", "prompt": "please __fail__"}).json()
    job = wait_for(client, job["id"], finished, 60)
    assert job["state"] == "failed"
    assert job["error"] == "the test engine was asked to fail; remove __fail__ from the prompt"


def test_engine_bug_fails_job_not_worker(client: httpx.Client) -> None:
    pid = client.get("/v1/info").json()["worker_pid"]
    job = client.post("/v1/jobs", json={"kind": "slow", "prompt": "__error__"}).json()
    job = wait_for(client, job["id"], finished, 60)
    assert job["state"] == "failed"
    assert "ZeroDivisionError: a deliberate engine bug" in job["error"] and "server log" in job["error"]
    assert client.get("/v1/info").json()["worker_pid"] == pid  # same worker, still alive


def test_cancel_falls_back_to_kill(client: httpx.Client, shared_server: ServerProcess) -> None:
    # The shared server has --cancel-grace 1.5; this engine never checks for cancellation.
    job = client.post("/v1/jobs", json={"kind": "slow", "prompt": "__stubborn__"}).json()
    wait_for(client, job["id"], lambda j: j["message"].startswith("step"), 60)
    pid = client.get("/v1/info").json()["worker_pid"]
    client.post(f"/v1/jobs/{job['id']}/cancel")
    job = wait_for(client, job["id"], finished, 20)
    assert job["state"] == "cancelled" and "did not stop within 1.5 s" in job["message"]
    nxt = wait_for(client, client.post("/v1/jobs", json={"kind": "fast"}).json()["id"], finished)
    assert nxt["state"] == "succeeded"
    assert client.get("/v1/info").json()["worker_pid"] != pid


def test_sigterm_to_worker_resumes_the_job(client: httpx.Client) -> None:
    # A service manager stopping everything sends SIGTERM to the worker too: that is not the
    # job's fault, so the job resumes from its checkpoint in a new worker instead of failing.
    job = client.post("/v1/jobs", json={"kind": "slow", "prompt": "terminated"}).json()
    wait_for(client, job["id"], lambda j: j["message"].startswith("step 3/"), 60)
    pid = client.get("/v1/info").json()["worker_pid"]
    os.kill(pid, signal.SIGTERM)
    job = wait_for(client, job["id"], finished, 60)
    assert job["state"] == "succeeded", job["error"]
    steps = client.get(f"/v1/jobs/{job['id']}/artifacts/attributes.json").json()["steps"]
    assert [s["step"] for s in steps] == list(range(6))
    assert steps[0]["pid"] == pid and steps[-1]["pid"] != pid  # resumed in a new worker


def test_idle_worker_killed_is_replaced(client: httpx.Client, shared_server: ServerProcess) -> None:
    pid = client.get("/v1/info").json()["worker_pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        new = client.get("/v1/info").json()["worker_pid"]
        if new not in (None, pid):
            break
        time.sleep(0.1)
    assert new not in (None, pid)
    assert f"worker process {pid} exited with code -9; restarting it" in shared_server.log()
    job = wait_for(client, client.post("/v1/jobs", json={"kind": "fast"}).json()["id"], finished)
    assert job["state"] == "succeeded"
