"""Bad input gets the right 4xx with a usable reason, and the server keeps serving."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import zlib

import httpx
import pytest
from PIL import Image

from tests.server.harness import FAST, REPO, SLOW, ServerProcess, finished, free_port, wait_for


@pytest.fixture(autouse=True)
def still_serving(client: httpx.Client):
    yield
    assert client.get("/v1/health").json() == {"status": "ok"}


def png_bytes(width: int, height: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), 0).save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height but carries one tiny deflate stream (a bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def raw_get(port: int, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (no client-side normalisation); (status, whole reply)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1]), reply


def locs(r: httpx.Response) -> list[list]:
    return [e["loc"] for e in r.json()["detail"]]


def test_malformed_json(client: httpx.Client) -> None:
    r = client.post("/v1/jobs", content=b'{"kind": "fast", ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    r = client.post("/v1/jobs", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_unknown_kind_names_the_allowed_ones(client: httpx.Client) -> None:
    r = client.post("/v1/jobs", json={"kind": "nerf_of_doom"})
    assert r.status_code == 422 and locs(r) == [["body", "kind"]]
    assert "'fast'" in r.json()["detail"][0]["msg"] and "'slow'" in r.json()["detail"][0]["msg"]
    # photo_avatar needs a photo, so the JSON route refuses it.
    assert client.post("/v1/jobs", json={"kind": "photo_avatar"}).status_code == 422


def test_prompt_too_long(client: httpx.Client) -> None:
    r = client.post("/v1/jobs", json={"kind": "fast", "prompt": "x" * 1001})
    assert r.status_code == 422 and locs(r) == [["body", "prompt"]]
    assert "at most 1000 characters" in r.json()["detail"][0]["msg"]
    assert client.post("/v1/jobs", json={"kind": "fast", "prompt": "x" * 1000}).status_code == 201
    # A body far over the JSON limit is refused before it is parsed.
    r = client.post("/v1/jobs", json={"kind": "fast", "prompt": "x" * 2_000_000})
    assert r.status_code == 413 and "limited to" in r.json()["detail"]


def test_numeric_ranges_name_field_and_bound(client: httpx.Client) -> None:
    r = client.post(
        "/v1/jobs",
        json={
            "kind": "fast",
            "seed": -1,
            "guidance_scale": 0,
            "output": {"resolution": -64, "turntable_size": 4096},
        },
    )
    assert r.status_code == 422
    detail = {tuple(e["loc"]): e["msg"] for e in r.json()["detail"]}
    assert detail == {
        ("body", "seed"): "Input should be greater than or equal to 0",
        ("body", "guidance_scale"): "Input should be greater than 0",
        ("body", "output", "resolution"): "Input should be greater than or equal to 64",
        ("body", "output", "turntable_size"): "Input should be less than or equal to 1024",
    }
    r = client.post("/v1/jobs", json={"kind": "fast", "output": {"resolution": 64, "texture_size": 4097}})
    assert locs(r) == [["body", "output", "texture_size"]]
    r = client.post(
        "/v1/jobs", json={"kind": "fast", "output": {"resolutoin": 128}}
    )  # typo: refused, not ignored
    assert r.status_code == 422 and locs(r) == [["body", "output", "resolutoin"]]


def test_text_to_3d_needs_prompt_and_attributes_are_checked(client: httpx.Client) -> None:
    r = client.post("/v1/jobs", json={"kind": "fast", "attributes": {"hair_style": "mohawk"}})
    assert r.status_code == 422 and locs(r) == [["body", "attributes"]]
    assert "bob" in r.json()["detail"][0]["msg"]  # lists the allowed values
    assert (
        client.post("/v1/jobs", json={"kind": "fast", "attributes": {"hair_style": "bob"}}).status_code == 201
    )


def test_unpaired_surrogate_is_422_not_500(client: httpx.Client) -> None:
    body = b'{"kind": "fast", "prompt": "\\ud800"}'
    r = client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and locs(r) == [["body", "prompt"]]


def test_path_traversal_in_artifact_names(client: httpx.Client, shared_server: ServerProcess) -> None:
    job = wait_for(client, client.post("/v1/jobs", json={"kind": "fast"}).json()["id"], finished)
    assert job["state"] == "succeeded"
    base = f"/v1/jobs/{job['id']}/artifacts/"
    attempts = [
        "..%2F..%2Fjobs.sqlite3",
        "..%2f..%2f..%2fetc%2fpasswd",
        "%2e%2e%2f%2e%2e%2fjobs.sqlite3",
        ".lock",
        "%2Fetc%2Fpasswd",
        "attributes.json%00.png",
        "..%5C..%5Cjobs.sqlite3",
    ]
    for name in attempts:
        r = client.get(base + name)
        assert r.status_code == 404, (name, r.status_code)
        assert b"SQLite format" not in r.content and b"root:" not in r.content
    # httpx normalises '..' away, so send those paths byte for byte over a socket.
    for path in (base + "../../../jobs.sqlite3", base + "..", "/v1/jobs/../../jobs.sqlite3"):
        status, body = raw_get(shared_server.port, path)
        assert status == 404 and b"SQLite format" not in body, (path, status)
    assert client.get(base + "attributes.json").status_code == 200  # the real one is served


def test_unknown_job_and_artifact_of_unfinished_job(client: httpx.Client) -> None:
    r = client.get("/v1/jobs/" + "0" * 32)
    assert r.status_code == 404 and "GET /v1/jobs" in r.json()["detail"]
    job = client.post("/v1/jobs", json={"kind": "slow", "prompt": "long"}).json()
    r = client.get(f"/v1/jobs/{job['id']}/artifacts/asset.glb")
    assert r.status_code == 409 and "once it has succeeded" in r.json()["detail"]
    client.post(f"/v1/jobs/{job['id']}/cancel")
    wait_for(client, job["id"], finished, 30)


def test_photo_upload_accepted_and_run(client: httpx.Client) -> None:
    data = png_bytes(64, 48)
    params = json.dumps({"seed": 7, "output": {"turntable_frames": 0}, "kind": "ignored"})
    r = client.post("/v1/jobs/photo", files={"photo": ("me.png", data, "image/png")}, data={"params": params})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["kind"] == "photo_avatar" and job["params"]["seed"] == 7
    assert job["params"]["photo"] == {
        "filename": "me.png",
        "format": "PNG",
        "width": 64,
        "height": 48,
        "bytes": len(data),
    }
    job = wait_for(client, job["id"], finished, 60)
    assert job["state"] == "succeeded", job["error"]
    record = client.get(f"/v1/jobs/{job['id']}/artifacts/attributes.json").json()
    assert record["photo_bytes"] == len(data)  # the engine read the stored photo, byte for byte
    assert "turntable.mp4" not in {a["name"] for a in job["artifacts"]}


def test_photo_upload_refusals(client: httpx.Client) -> None:
    def post(data: bytes, params: str | None = None) -> httpx.Response:
        form = {"params": params} if params is not None else None
        return client.post("/v1/jobs/photo", files={"photo": ("p.png", data, "image/png")}, data=form)

    # Not an image; an image format that is not accepted; too small.
    r = post(b"GIF89a this is not really an image")
    assert r.status_code == 415 and "PNG, JPEG or WebP" in r.json()["detail"]
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, format="BMP")
    assert post(buf.getvalue()).status_code == 415
    assert post(png_bytes(8, 8)).status_code == 415
    # A truncated PNG: the header is fine, the pixels are not.
    assert post(png_bytes(64, 64)[:60]).status_code == 415
    # Decompression bombs: a real 48 MP 1-bit PNG of ~6 kB, and a header claiming 2 gigapixels.
    bomb = png_bytes(8000, 6000, mode="1")
    assert len(bomb) < 100_000
    r = post(bomb)
    assert (
        r.status_code == 413
        and "48.0 megapixels" in r.json()["detail"]
        and "40 megapixels" in r.json()["detail"]
    )
    assert post(png_header_only(50_000, 40_000)).status_code == 413
    # Bad params name the field under params.
    r = post(png_bytes(32, 32), json.dumps({"output": {"resolution": 9999}}))
    assert r.status_code == 422 and locs(r) == [["body", "params", "output", "resolution"]]
    r = post(png_bytes(32, 32), "not json")
    assert r.status_code == 422 and locs(r) == [["body", "params"]]
    # No photo part; not multipart at all.
    r = client.post("/v1/jobs/photo", files={"params": (None, "{}")})
    assert r.status_code == 422 and locs(r) == [["body", "photo"]]
    assert client.post("/v1/jobs/photo", json={}).status_code == 415


def test_photo_upload_size_limit(client: httpx.Client) -> None:
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * (21 * 1024 * 1024)
    r = client.post("/v1/jobs/photo", files={"photo": ("big.png", big, "image/png")})
    assert r.status_code == 413 and "MB" in r.json()["detail"]

    # Without Content-Length (chunked), the limit holds while the body streams.
    def chunks():
        yield b"--b\r\nContent-Disposition: form-data; name=photo; filename=x.png\r\n\r\n"
        for _ in range(30):
            yield b"\0" * (1024 * 1024)
        yield b"\r\n--b--\r\n"

    r = client.post(
        "/v1/jobs/photo", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert r.status_code == 413


def test_host_and_origin_guards(client: httpx.Client, shared_server: ServerProcess) -> None:
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own Host.
    r = client.get("/v1/info", headers={"host": "evil.example"})
    assert r.status_code == 400
    # A cross-site browser request (form POST needs no preflight) is refused; no CORS headers.
    r = client.post("/v1/jobs", json={"kind": "fast"}, headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    r = client.options(
        "/v1/jobs", headers={"origin": "http://evil.example", "access-control-request-method": "POST"}
    )
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    # The server's own origin (the /docs page) passes.
    own = f"http://127.0.0.1:{shared_server.port}"
    assert client.get("/v1/health", headers={"origin": own}).status_code == 200


def test_token_required_when_set(server_factory) -> None:
    server = server_factory(["--engine", FAST, "--token", "s3cret-token"], token="s3cret-token").start()
    with httpx.Client(base_url=server.base_url) as anon:
        assert anon.get("/v1/health").status_code == 200  # health needs no token
        r = anon.get("/v1/jobs")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert anon.get("/v1/info", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
        assert (
            anon.post("/v1/jobs", json={"kind": "fast"}, headers={"Authorization": "Basic eDp5"}).status_code
            == 401
        )
    with server.client() as c:
        assert c.get("/v1/jobs").status_code == 200
        job = wait_for(c, c.post("/v1/jobs", json={"kind": "fast"}).json()["id"], finished)
        assert c.get(f"/v1/jobs/{job['id']}/artifacts/attributes.json").status_code == 200
    with httpx.Client(base_url=server.base_url) as anon:
        assert anon.get(f"/v1/jobs/{job['id']}/artifacts/attributes.json").status_code == 401


def test_non_loopback_bind_refuses_without_token(tmp_path) -> None:
    cmd = [sys.executable, "-m", "server", "--host", "0.0.0.0", "--port", str(free_port())]
    cmd += ["--data-dir", str(tmp_path)]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "needs a token" in p.stderr and "--token" in p.stderr


def test_queue_cap_and_data_dir_lock(server_factory) -> None:
    server = server_factory(["--engine", SLOW, "--max-queued", "2"], {"KILN_SLOW_STEP_S": "2"}).start()
    with server.client() as c:
        # The first job is taken by the worker before the next two are posted: posted at once,
        # all three can be queued before it starts, and the third is refused (seen on CI).
        ids = []
        for k in range(3):
            r = c.post("/v1/jobs", json={"kind": "slow", "prompt": "x"})
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
            if k == 0:
                wait_for(c, ids[0], lambda j: j["state"] == "running", 60)
        # one running, two queued
        r = c.post("/v1/jobs", json={"kind": "slow", "prompt": "x"})
        assert r.status_code == 429 and "2 jobs are already queued" in r.json()["detail"], r.text
        c.post(f"/v1/jobs/{ids[2]}/cancel")
        r = c.post("/v1/jobs", json={"kind": "slow", "prompt": "x"})
        assert r.status_code == 201, r.text
    # A second server on the same data folder refuses to start instead of sharing the jobs.
    cmd = [sys.executable, "-m", "server", "--data-dir", str(server.data_dir), "--port", str(free_port())]
    p = subprocess.run(
        cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True
    )
    assert p.returncode == 1 and "another Kiln server is using" in p.stderr, (p.returncode, p.stderr[-2000:])
