"""Job lifecycle over real HTTP for each engine: submit, progress by polling and SSE, files, cancel, delete."""

from __future__ import annotations

import json
import struct
import time

import httpx
import pytest

from tests.server.harness import EngineCase, ServerProcess, engine_cases, finished, read_sse, wait_for

pytestmark = pytest.mark.parametrize("case", engine_cases())


def check_glb(data: bytes) -> None:
    # glTF 2.0 binary header: magic "glTF", version 2, total length == file size; first chunk JSON.
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    chunk_len, chunk_type = struct.unpack_from("<I4s", data, 12)
    assert chunk_type == b"JSON"
    gltf = json.loads(data[20 : 20 + chunk_len])
    assert gltf["asset"]["version"] == "2.0" and len(gltf["meshes"]) >= 1


def test_submit_poll_download(case: EngineCase, client: httpx.Client) -> None:
    r = client.post("/v1/jobs", json=case.request)
    assert r.status_code == 201, r.text
    job = r.json()
    assert len(job["id"]) == 32 and job["state"] in ("queued", "running") and job["artifacts"] == []
    assert 0 <= job["params"]["seed"] < 2**31  # omitted seed is filled in and echoed

    # Poll: progress never goes back, and the job ends succeeded with its files listed.
    seen, last = [], -1.0
    deadline = time.monotonic() + case.timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job['id']}").json()
        assert job["progress"] >= last - 1e-9, (last, job)
        last = job["progress"]
        seen.append((job["state"], job["stage"]))
        if finished(job):
            break
        assert job["artifacts"] == []  # nothing is listed before the job succeeded
        time.sleep(0.05)
    assert job["state"] == "succeeded", job["error"]
    assert job["progress"] == 1.0 and job["error"] is None and job["finished_at"] >= job["started_at"]
    assert seen[-1] != ("running", "") and any(s == "running" for s, _ in seen)
    names = {a["name"]: a for a in job["artifacts"]}
    assert {"asset.glb", "preview.png", "attributes.json"} <= set(names)
    assert names["asset.glb"]["content_type"] == "model/gltf-binary"

    # Download: bytes match the listed sizes, content types are right, GLB parses.
    for name, art in names.items():
        r = client.get(art["url"])
        assert r.status_code == 200 and len(r.content) == art["size"], name
        assert r.headers["content-type"].split(";")[0] == art["content_type"]
    check_glb(client.get(names["asset.glb"]["url"]).content)
    assert client.get(names["preview.png"]["url"]).content[:8] == b"\x89PNG\r\n\x1a\n"

    # The job is listed, newest first, and in the state filter.
    listed = client.get("/v1/jobs", params={"limit": 5}).json()["jobs"]
    assert listed[0]["id"] == job["id"]
    assert job["id"] in {
        j["id"] for j in client.get("/v1/jobs", params={"state": "succeeded"}).json()["jobs"]
    }
    assert job["id"] not in {
        j["id"] for j in client.get("/v1/jobs", params={"state": "queued"}).json()["jobs"]
    }


def test_video_range_requests(case: EngineCase, client: httpx.Client) -> None:
    job = client.post("/v1/jobs", json=case.request).json()
    job = wait_for(client, job["id"], finished, case.timeout_s)
    video = next(a for a in job["artifacts"] if a["name"] == "turntable.mp4")
    full = client.get(video["url"]).content
    assert full[4:8] == b"ftyp" and len(full) == video["size"] > 200
    assert video["content_type"] == "video/mp4"

    # A middle slice: 206, exact bytes, Content-Range naming the slice and the total.
    r = client.get(video["url"], headers={"Range": "bytes=100-199"})
    assert r.status_code == 206
    assert r.content == full[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(full)}"
    # A suffix range (the last 50 bytes), as players ask for the moov atom.
    r = client.get(video["url"], headers={"Range": "bytes=-50"})
    assert r.status_code == 206 and r.content == full[-50:]
    # Past the end: 416 with the size, and the server keeps serving.
    r = client.get(video["url"], headers={"Range": f"bytes={len(full) + 10}-"})
    assert r.status_code == 416
    assert client.get("/v1/health").json() == {"status": "ok"}


def test_progress_over_sse(case: EngineCase, client: httpx.Client) -> None:
    job = client.post("/v1/jobs", json=case.request).json()
    with client.stream("GET", f"/v1/jobs/{job['id']}/events", timeout=case.timeout_s) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = read_sse(r)  # returns only when the server ends the stream
    states = [e["state"] for e in events]
    progress = [e["progress"] for e in events]
    # Every change is an event: several progress steps, in order, ending in the terminal state.
    assert states[-1] == "succeeded" and states.count("succeeded") == 1
    assert "running" in states and len(events) >= 4
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert events[-1]["artifacts"] and all(e["id"] == job["id"] for e in events)


def test_cancel_running_job(case: EngineCase, client: httpx.Client, shared_server: ServerProcess) -> None:
    job = client.post("/v1/jobs", json=case.request).json()
    wait_for(client, job["id"], lambda j: j["state"] == "running" and j["progress"] > 0, case.timeout_s)
    t0 = time.monotonic()
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202 and r.json()["state"] in ("running", "cancelled")
    job = wait_for(client, job["id"], finished, 30)
    took = time.monotonic() - t0
    assert job["state"] == "cancelled" and job["artifacts"] == []
    assert took < 5.0, took  # cooperative: the engine checks at every progress report
    assert client.get(f"/v1/jobs/{job['id']}/artifacts/asset.glb").status_code == 409
    # Cancelling again is a no-op on a finished job.
    again = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 202 and again.json()["state"] == "cancelled"
    # The worker survived a cooperative cancel and runs the next job.
    nxt = client.post("/v1/jobs", json={"kind": "fast"}).json()
    assert wait_for(client, nxt["id"], finished)["state"] == "succeeded"


def test_cancel_queued_and_delete(
    case: EngineCase, client: httpx.Client, shared_server: ServerProcess
) -> None:
    first = client.post("/v1/jobs", json=case.request).json()
    second = client.post("/v1/jobs", json=case.request).json()
    r = client.delete(f"/v1/jobs/{second['id']}")  # DELETE on an active job cancels it
    assert r.status_code == 202 and r.json()["state"] == "cancelled"
    assert r.json()["started_at"] is None  # it never ran
    first = wait_for(client, first["id"], finished, case.timeout_s)
    assert first["state"] == "succeeded"

    # Deleting a finished job removes it and its folder.
    folder = shared_server.data_dir / "jobs" / first["id"]
    assert folder.is_dir()
    assert client.delete(f"/v1/jobs/{first['id']}").status_code == 204
    assert client.get(f"/v1/jobs/{first['id']}").status_code == 404
    assert not folder.exists()
    assert client.get(first["artifacts"][0]["url"]).status_code == 404
