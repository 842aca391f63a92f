"""Small contract breaks: Range errors in JSON, a bool seed, the worker's environment, Host with
'@', the token kept out of argv, and /docs without a CDN."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx

from tests.server.harness import FAST, ServerProcess, finished, pid_alive, wait_for


def _finished_artifact(client: httpx.Client) -> tuple[str, int]:
    job = wait_for(client, client.post("/v1/jobs", json={"kind": "fast"}).json()["id"], finished)
    art = job["artifacts"][0]
    return art["url"], art["size"]


def test_range_errors_answer_json_detail(client: httpx.Client) -> None:
    url, size = _finished_artifact(client)
    r = client.get(url, headers={"Range": "bytes=abc"})
    assert r.status_code == 400 and r.headers["content-type"] == "application/json", r.text
    assert "Range" in r.json()["detail"]
    r = client.get(url, headers={"Range": "items=0-1"})
    assert r.status_code == 400 and "bytes" in r.json()["detail"]
    r = client.get(url, headers={"Range": f"bytes={size + 10}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"
    assert str(size) in r.json()["detail"]
    r = client.get(url, headers={"Range": "bytes=0-0"})  # a good range still works
    assert r.status_code == 206 and len(r.content) == 1


def test_a_bool_seed_is_refused(client: httpx.Client) -> None:
    for seed in (True, False):
        r = client.post("/v1/jobs", json={"kind": "fast", "seed": seed})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "seed"], r.text
    files = {"photo": ("p.png", b"x", "image/png"), "params": (None, json.dumps({"seed": True}))}
    r = client.post("/v1/jobs/photo", files=files)
    assert r.status_code == 422 and ["body", "params", "seed"] in [e["loc"] for e in r.json()["detail"]]


def _raw(port: int, host: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET /v1/health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1])


def test_host_with_user_info_or_junk_is_refused(shared_server: ServerProcess) -> None:
    port = shared_server.port
    for bad in ("127.0.0.1:1@evil.example", "127.0.0.1@evil.example", "localhost:80:81", "127.0.0.1:x"):
        assert _raw(port, bad) == 400, bad
    for good in (f"127.0.0.1:{port}", "localhost", f"[::1]:{port}"):
        assert _raw(port, good) == 200, good


def test_worker_does_not_inherit_the_token_and_argv_holds_none(server_factory, tmp_path: Path) -> None:
    secret = "env-secret-123456"
    server = server_factory(["--engine", FAST], {"KILN_TOKEN": secret}, token=secret).start()
    deadline = time.monotonic() + 30
    while not (pid := server.info().get("worker_pid")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pid and pid_alive(pid)
    worker_env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert not any(v.startswith(b"KILN_TOKEN=") for v in worker_env)
    assert secret.encode() not in b"".join(worker_env)
    server.stop()
    # --token-file: the token is read from a file, so `ps` shows only the file's name.
    token_file = tmp_path / "token"
    token_file.write_text("file-secret-abcdef\n")
    server = server_factory(["--engine", FAST, "--token-file", str(token_file)], token="file-secret-abcdef")
    server.start()
    with httpx.Client(base_url=server.base_url) as anon:
        assert anon.get("/v1/jobs").status_code == 401
    with server.client() as c:
        assert c.get("/v1/jobs").status_code == 200
    assert b"file-secret" not in Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()


def test_docs_page_needs_no_network(client: httpx.Client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "/docs-assets/swagger-ui-bundle.js" in page.text and "cdn" not in page.text.lower()
    js = client.get("/docs-assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200
