"""An offline model: no local text model and a hub that never answers fail a text-to-3D job in seconds."""

from __future__ import annotations

import socket
from datetime import datetime

import pytest

from tests.server.harness import finished, wait_for


def _seconds(a: str, b: str) -> float:
    parse = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))  # noqa: E731
    return (parse(b) - parse(a)).total_seconds()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_unreachable_hub_fails_a_text_to_3d_job_in_seconds(server_factory, tmp_path) -> None:
    pytest.importorskip("diffusers")
    # A hub that takes connections and never answers (the worst case: no refusal to act on).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        env = {"HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": ""}
        args = ["--kinds", "text_to_3d", "--text-model", "someone/not-downloaded", "--worker-threads", "1"]
        server = server_factory(args, env).start()
        with server.client() as c:
            job = c.post(
                "/v1/jobs", json={"kind": "text_to_3d", "prompt": "a chair", "preset": "draft"}
            ).json()
            job = wait_for(c, job["id"], finished, 120)
    assert job["state"] == "failed", job
    assert "hf download someone/not-downloaded" in job["error"] and "hub could not be reached" in job["error"]
    took = _seconds(job["started_at"], job["finished_at"])
    # The probe gives up after HUB_PROBE_S; the rest is importing diffusers on a busy CI box
    # (10.5 s once). The failure this guards against was 263 s of hub retries.
    assert took < 45.0, took
