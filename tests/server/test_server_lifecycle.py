"""Job lifecycle over real HTTP for each engine: submit, progress by polling and SSE, files, cancel, delete.

The engine is a parameter (``engine_cases``): the checkpointed test engine always, the real
avatar engine once it is installed. Each engine runs one job to the end (watched by SSE and
by polling at once) and two it cancels, so the real engine's CPU time stays bounded.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from typing import Any

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


def test_submit_watch_download(case: EngineCase, engine_server: ServerProcess) -> None:
    with engine_server.client() as client:
        r = client.post("/v1/jobs", json=case.request)
        assert r.status_code == 201, r.text
        job = r.json()
        assert len(job["id"]) == 32 and job["state"] in ("queued", "running") and job["artifacts"] == []
        assert 0 <= job["params"]["seed"] < 2**31  # a seed is always filled in and echoed

        # 1. Watch by SSE in a thread while this thread polls.
        events: list[dict[str, Any]] = []

        def watch() -> None:
            with (
                engine_server.client() as c,
                c.stream("GET", f"/v1/jobs/{job['id']}/events", timeout=case.timeout_s) as s,
            ):
                assert s.headers["content-type"].startswith("text/event-stream")
                events.extend(read_sse(s))  # returns when the server ends the stream

        watcher = threading.Thread(target=watch)
        watcher.start()
        polled, last = [], -1.0
        deadline = time.monotonic() + case.timeout_s
        while time.monotonic() < deadline:
            job = client.get(f"/v1/jobs/{job['id']}").json()
            assert job["progress"] >= last - 1e-9, (last, job)  # progress never goes back
            last = job["progress"]
            polled.append(job)
            if finished(job):
                break
            assert job["artifacts"] == []  # nothing is listed before the job succeeded
            time.sleep(0.05)
        watcher.join(30)
        assert not watcher.is_alive(), "the event stream did not end after the job finished"

        assert job["state"] == "succeeded", job["error"]
        assert job["progress"] == 1.0 and job["error"] is None and job["finished_at"] >= job["started_at"]
        assert any(j["state"] == "running" and j["stage"] for j in polled)
        assert any(j["eta_seconds"] is not None for j in polled + events)  # an ETA was offered

        # 2. SSE: every change an event, in order, ending with the one terminal state.
        states, progress = [e["state"] for e in events], [e["progress"] for e in events]
        assert states[-1] == "succeeded" and states.count("succeeded") == 1 and "running" in states
        assert len(events) >= 4 and progress == sorted(progress) and progress[-1] == 1.0
        assert events[-1]["artifacts"] == job["artifacts"]

        # 3. Files: listed sizes and content types hold; the GLB parses.
        names = {a["name"]: a for a in job["artifacts"]}
        assert {"asset.glb", "preview.png", "attributes.json", "turntable.mp4"} <= set(names)
        assert names["asset.glb"]["content_type"] == "model/gltf-binary"
        for name, art in names.items():
            r = client.get(art["url"])
            assert r.status_code == 200 and len(r.content) == art["size"], name
            assert r.headers["content-type"].split(";")[0] == art["content_type"]
        check_glb(client.get(names["asset.glb"]["url"]).content)
        assert client.get(names["preview.png"]["url"]).content[:8] == b"\x89PNG\r\n\x1a\n"

        # 4. The video in ranges, as a player scrubs it.
        video = names["turntable.mp4"]
        full = client.get(video["url"]).content
        assert full[4:8] == b"ftyp" and len(full) > 200 and video["content_type"] == "video/mp4"
        r = client.get(video["url"], headers={"Range": "bytes=100-199"})
        assert r.status_code == 206 and r.content == full[100:200]
        assert r.headers["content-range"] == f"bytes 100-199/{len(full)}"
        r = client.get(video["url"], headers={"Range": "bytes=-50"})  # players ask for the moov atom
        assert r.status_code == 206 and r.content == full[-50:]
        assert client.get(video["url"], headers={"Range": f"bytes={len(full) + 10}-"}).status_code == 416

        # 5. Listed newest first and under its state.
        assert client.get("/v1/jobs", params={"limit": 5}).json()["jobs"][0]["id"] == job["id"]
        by_state = client.get("/v1/jobs", params={"state": "succeeded"}).json()["jobs"]
        assert job["id"] in {j["id"] for j in by_state}
        assert job["id"] not in {
            j["id"] for j in client.get("/v1/jobs", params={"state": "queued"}).json()["jobs"]
        }


def test_cancel_queued_and_running_then_delete(case: EngineCase, engine_server: ServerProcess) -> None:
    with engine_server.client() as client:
        first = client.post("/v1/jobs", json=case.request).json()
        second = client.post("/v1/jobs", json=case.request).json()

        # A queued job: DELETE on an active job cancels it at once; it never ran.
        r = client.delete(f"/v1/jobs/{second['id']}")
        assert r.status_code == 202 and r.json()["state"] == "cancelled" and r.json()["started_at"] is None

        # A running job: cooperative cancel at its next progress report.
        wait_for(client, first["id"], lambda j: j["state"] == "running" and j["progress"] > 0, case.timeout_s)
        t0 = time.monotonic()
        r = client.post(f"/v1/jobs/{first['id']}/cancel")
        assert r.status_code == 202 and r.json()["state"] in ("running", "cancelled")
        job = wait_for(client, first["id"], finished, 30)
        took = time.monotonic() - t0
        assert job["state"] == "cancelled" and job["artifacts"] == []
        assert took < 10.0, took
        assert client.get(f"/v1/jobs/{first['id']}/artifacts/asset.glb").status_code == 409
        again = client.post(f"/v1/jobs/{first['id']}/cancel")  # a no-op on a finished job
        assert again.status_code == 202 and again.json()["state"] == "cancelled"

        # Deleting a finished job removes it and its folder.
        folder = engine_server.data_dir / "jobs" / first["id"]
        assert folder.is_dir()
        assert client.delete(f"/v1/jobs/{first['id']}").status_code == 204
        assert client.get(f"/v1/jobs/{first['id']}").status_code == 404
        assert not folder.exists()
        assert client.delete(f"/v1/jobs/{first['id']}").status_code == 404

        # The worker survived the cancel and runs the next job.
        info = client.get("/v1/info").json()
        assert info["queue_length"] == 0 and info["worker_pid"] is not None
