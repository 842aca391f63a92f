"""50 clients submitting and watching at once: every job accounted for, exactly once, with its own params."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.server.harness import ServerProcess, finished, read_sse, wait_for

CLIENTS = 50


def test_fifty_clients_submit_and_poll(shared_server: ServerProcess) -> None:
    def one_client(i: int) -> tuple[str, dict, dict]:
        with shared_server.client() as c:
            r = c.post("/v1/jobs", json={"kind": "fast", "seed": 1000 + i, "prompt": f"client {i}"})
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]
            if i % 5 == 0:  # every fifth client watches by SSE, the others poll
                with c.stream("GET", f"/v1/jobs/{job_id}/events", timeout=120) as stream:
                    job = read_sse(stream)[-1]
            else:
                job = wait_for(c, job_id, finished, 120)
            record = c.get(f"/v1/jobs/{job_id}/artifacts/attributes.json").json()
            return job_id, job, record

    # Bounded: 50 threads on loopback, each with its own connection.
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(one_client, range(CLIENTS)))

    ids = [job_id for job_id, _, _ in results]
    assert len(set(ids)) == CLIENTS
    for i, (job_id, job, record) in enumerate(results):
        assert job["id"] == job_id and job["state"] == "succeeded", job
        # Each job ran with the params its client sent, not another client's.
        assert job["params"]["seed"] == 1000 + i and record["params"]["prompt"] == f"client {i}"
    with shared_server.client() as c:
        jobs = c.get("/v1/jobs", params={"limit": 500}).json()["jobs"]
        listed = [j["id"] for j in jobs]
        assert c.get("/v1/info").json()["queue_length"] == 0
    # Every job is listed exactly once, newest first.
    ours = [job_id for job_id in listed if job_id in set(ids)]
    assert sorted(ours) == sorted(ids) and len(ours) == CLIENTS
    created = [j["created_at"] for j in jobs]
    assert created == sorted(created, reverse=True)
