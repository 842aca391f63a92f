"""The real photo_avatar engine behind the multipart upload route (slow: a CPU avatar job)."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from tests.server.harness import ServerProcess, finished, wait_for

pytest.importorskip("core.pipelines.photo_avatar")


@pytest.mark.slow
def test_photo_avatar_job_from_an_upload(avatar_server: ServerProcess) -> None:
    # The real photo engine behind the multipart route: a face photo in, an avatar out, and
    # attributes.json saying what was read from the photo.
    skimage_data = pytest.importorskip("skimage.data")
    buf = io.BytesIO()
    Image.fromarray(skimage_data.astronaut()).save(buf, "JPEG", quality=92)
    params = {
        "prompt": "with a red cap",
        "seed": 1,
        "output": {"resolution": 64, "texture_size": 256, "turntable_frames": 0},
    }
    with avatar_server.client() as client:
        r = client.post(
            "/v1/jobs/photo",
            files={"photo": ("astronaut.jpg", buf.getvalue(), "image/jpeg")},
            data={"params": json.dumps(params)},
        )
        assert r.status_code == 201, r.text
        job = wait_for(client, r.json()["id"], finished, 600)
        assert job["state"] == "succeeded", job["error"]
        assert job["kind"] == "photo_avatar" and job["params"]["photo"]["format"] == "JPEG"
        names = {a["name"] for a in job["artifacts"]}
        assert {"asset.glb", "preview.png", "attributes.json"} <= names and "turntable.mp4" not in names
        record = client.get(f"/v1/jobs/{job['id']}/artifacts/attributes.json").json()
    assert record["attributes"]["headwear"] == "cap"  # from the prompt
    assert "skin_tone" in record["photo"]["read"]  # read from the photo
