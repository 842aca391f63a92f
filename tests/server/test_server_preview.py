"""GET /v1/jobs/{id}/preview: the engine's progress image while a job runs, the finished preview
after, versioned so a client downloads each new image once."""

from __future__ import annotations

import io

from PIL import Image

from tests.server.harness import finished, wait_for

BOX = "kiln_test_box=tests.blender.kiln_test_engine:run_job"


def grey(png: bytes) -> int:
    return Image.open(io.BytesIO(png)).convert("L").getpixel((0, 0))


def test_progress_previews_are_served_while_the_job_runs_and_versioned(server_factory):
    server = server_factory(
        ["--engine", BOX], env={"KILN_TEST_SLOW_S": "3", "KILN_TEST_PREVIEW_S": "0.6"}
    ).start()
    with server.client() as c:
        job = c.post("/v1/jobs", json={"kind": "kiln_test_box", "prompt": "a box __slow__"}).json()
        assert job["preview"] is None  # queued: nothing yet
        r = c.get(f"/v1/jobs/{job['id']}/preview")
        if job["state"] == "queued":
            assert r.status_code == 404 and "no preview image yet" in r.json()["detail"]
        versions, greys = [], []
        while not finished(job := c.get(f"/v1/jobs/{job['id']}").json()):
            preview = job["preview"]
            if preview and (not versions or preview["version"] != versions[-1]):
                r = c.get(preview["url"])
                assert r.status_code == 200 and r.headers["content-type"] == "image/png"
                assert r.headers["etag"].strip('"') == preview["version"] or len(versions) > 0
                versions.append(preview["version"])
                greys.append(grey(r.content))
                # The same version again is a 304 without a body.
                again = c.get(preview["url"], headers={"If-None-Match": r.headers["etag"]})
                assert again.status_code in (200, 304)
                if again.headers["etag"] == r.headers["etag"]:
                    assert again.status_code == 304 and again.content == b""
        assert job["state"] == "succeeded", job
        # Several distinct images arrived while it ran, each a newer one.
        assert len(versions) >= 2 and len(set(greys)) >= 2, (versions, greys)
        assert greys == sorted(greys)
        # After the job, the last image stays available (this engine writes no preview.png).
        assert job["preview"] is not None
        assert c.get(job["preview"]["url"]).status_code == 200


def test_a_job_without_previews_says_so(server_factory):
    server = server_factory(["--engine", BOX]).start()
    with server.client() as c:
        job = c.post("/v1/jobs", json={"kind": "kiln_test_box", "prompt": "a box"}).json()
        job = wait_for(c, job["id"], finished, timeout=60)
        assert job["state"] == "succeeded" and job["preview"] is None
        r = c.get(f"/v1/jobs/{job['id']}/preview")
        assert r.status_code == 404 and "preview" in r.json()["detail"]
        assert c.get("/v1/jobs/" + "0" * 32 + "/preview").status_code == 404
