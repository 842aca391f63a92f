"""The Ray backend (issue 14): a local Ray cluster on loopback, started and stopped by these tests.

The cluster is server/ray_local.py's ``LocalCluster`` (``ray start --head --block`` with two CPUs
on 127.0.0.1, in a temp folder and its own process group, so stopping it ends exactly its
processes, never another session's Ray); bench/server.py starts the same one. The tests run in
order: the last one stops the cluster under running jobs, then starts it again.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("ray", reason="ray is not installed: pip install -r requirements.txt -c constraints.txt")

from server.ray_local import LocalCluster
from tests.server.harness import FAST, SLOW, ServerProcess, finished, private_tmp, wait_for

pytestmark = pytest.mark.slow
RAY_ENV = {"KILN_SLOW_STEPS": "6", "KILN_SLOW_STEP_S": "0.3"}
CLUSTER_START_S = 60.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster(cpus=2).start(CLUSTER_START_S)
    yield c
    c.close()


@pytest.fixture(scope="module")
def ray_server(cluster: LocalCluster) -> Iterator[ServerProcess]:
    tmp = private_tmp()
    args = [
        "--engine",
        SLOW,
        "--engine",
        FAST,
        "--ray",
        cluster.address,
        "--workers",
        "2",
        "--worker-threads",
        "1",
    ]
    server = ServerProcess(tmp / "data", args, RAY_ENV).start()
    yield server
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def _wait_backend(server: ServerProcess, status: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    info: dict = {}
    while time.monotonic() < deadline:
        info = server.info()
        if info["backend"]["status"] == status and (status != "up" or all(w["pid"] for w in info["workers"])):
            return info
        time.sleep(0.2)
    raise AssertionError(f"backend not {status} in {timeout} s: {info.get('backend')} {info.get('workers')}")


def test_ray_auto_finds_the_cluster_and_sizes_the_pool(cluster: LocalCluster, server_factory) -> None:
    # First in the file: the module's ray_server holds both CPUs with its two actors later on.
    # --ray auto reads RAY_ADDRESS (else the cluster this machine started last), as ray.init does;
    # without --workers the pool has one slot per job the cluster fits: 2 CPUs / 1 CPU per job.
    server = server_factory(["--engine", FAST, "--ray", "auto"], {"RAY_ADDRESS": cluster.address}).start()
    info = _wait_backend(server, "up", 120)
    assert info["backend"]["address"] == "auto" and len(info["workers"]) == 2
    with server.client() as c:
        job = wait_for(c, c.post("/v1/jobs", json={"kind": "fast"}).json()["id"], finished, 60)
        assert job["state"] == "succeeded", job["error"]
        record = c.get(f"/v1/jobs/{job['id']}/artifacts/attributes.json").json()
    assert record["pid"] in {w["pid"] for w in info["workers"]}


def test_jobs_run_on_ray_with_valid_artifacts(ray_server: ServerProcess) -> None:
    import trimesh

    info = _wait_backend(ray_server, "up", 120)
    assert info["backend"]["kind"] == "ray" and info["backend"]["address"].startswith("127.0.0.1:")
    actors = {w["pid"] for w in info["workers"]}
    assert len(info["workers"]) == 2 and all(w["backend"] == "ray" and w["node"] for w in info["workers"])
    # The node advertises loopback, not this machine's routable address: nothing listens outside it.
    assert all(w["node"].startswith("127.0.0.1 ") for w in info["workers"]), info["workers"]
    local = {ray_server.proc.pid, info["worker_pid"]}  # the server and its bridge: not where jobs run
    with ray_server.client() as c:
        ids = [
            c.post("/v1/jobs", json={"kind": "slow", "prompt": f"ray {i}", "seed": i}).json()["id"]
            for i in range(3)
        ]
        done = [wait_for(c, job_id, finished, 120) for job_id in ids]
        assert [j["state"] for j in done] == ["succeeded"] * 3, [j["error"] for j in done]
        for job in done:
            names = {a["name"] for a in job["artifacts"]}
            assert {"asset.glb", "preview.png", "attributes.json"} <= names
            glb = c.get(f"/v1/jobs/{job['id']}/artifacts/asset.glb").content
            assert glb[:4] == b"glTF"
            mesh = trimesh.load(trimesh.util.wrap_as_stream(glb), file_type="glb", force="mesh")
            assert len(mesh.faces) > 100 and 0.3 < mesh.extents.max() < 1.2  # the test engine's sphere
            record = c.get(f"/v1/jobs/{job['id']}/artifacts/attributes.json").json()
            assert [s["step"] for s in record["steps"]] == list(range(6))
            assert record["pid"] in actors and record["pid"] not in local  # ran in a Ray actor
        # Progress flowed back while they ran: the stored stage/message came from the actor.
        assert all(j["progress"] == 1.0 for j in done)


def test_cancel_reaches_the_ray_actor(ray_server: ServerProcess) -> None:
    with ray_server.client() as c:
        job = c.post("/v1/jobs", json={"kind": "slow", "prompt": "cancel me on ray"}).json()
        wait_for(c, job["id"], lambda j: j["message"].startswith("step 2/"), 120)
        c.post(f"/v1/jobs/{job['id']}/cancel")
        job = wait_for(c, job["id"], finished, 30)
        assert job["state"] == "cancelled" and job["message"] == "cancelled", job


def test_killed_ray_worker_resumes_its_job(ray_server: ServerProcess) -> None:
    _wait_backend(ray_server, "up", 60)
    with ray_server.client() as c:
        job = c.post("/v1/jobs", json={"kind": "slow", "prompt": "kill my ray worker"}).json()
        wait_for(c, job["id"], lambda j: j["message"].startswith(("step 3/", "step 4/")), 120)
        lane = next(w for w in c.get("/v1/info").json()["workers"] if w["running"] == job["id"])
        os.kill(lane["pid"], signal.SIGKILL)  # the Ray worker process running the job
        job = wait_for(c, job["id"], finished, 120)
        assert job["state"] == "succeeded", job["error"]
        steps = c.get(f"/v1/jobs/{job['id']}/artifacts/attributes.json").json()["steps"]
    assert [s["step"] for s in steps] == list(range(6))  # resumed from its checkpoint, no step twice
    assert steps[0]["pid"] == lane["pid"] and steps[-1]["pid"] != lane["pid"]
    assert "requeued: the Ray worker running it died" in ray_server.log()


def test_cluster_down_is_reported_and_no_job_is_lost(
    cluster: LocalCluster, ray_server: ServerProcess
) -> None:
    _wait_backend(ray_server, "up", 60)
    with ray_server.client() as c:
        ids = [
            c.post("/v1/jobs", json={"kind": "slow", "prompt": f"outage {i}"}).json()["id"] for i in range(3)
        ]
        wait_for(c, ids[0], lambda j: j["message"].startswith("step 2/"), 120)
        cluster.stop()
        info = _wait_backend(ray_server, "down", 60)
        message = info["backend"]["message"]
        assert (
            f"the Ray cluster at {cluster.address} does not answer" in message and "none is lost" in message
        )
        # No job is lost: the running ones went back to the queue, none failed.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = [c.get(f"/v1/jobs/{job_id}").json()["state"] for job_id in ids]
            if states == ["queued"] * 3:
                break
            time.sleep(0.2)
        assert states == ["queued"] * 3, states
        assert c.get("/v1/info").json()["queue_length"] == 3
        # The cluster comes back on its address: the server reconnects and finishes every job.
        cluster.start()
        _wait_backend(ray_server, "up", 90)
        done = [wait_for(c, job_id, finished, 120) for job_id in ids]
        assert [j["state"] for j in done] == ["succeeded"] * 3, [j["error"] for j in done]
        first = c.get(f"/v1/jobs/{ids[0]}/artifacts/attributes.json").json()["steps"]
        assert [s["step"] for s in first] == list(range(6))  # resumed after the outage
