"""Stalled connections: header and body deadlines, the connection limit, anonymous connections."""

from __future__ import annotations

import select
import socket
import time

import httpx

from tests.server.harness import FAST

PARTIAL_HEADERS = b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
PARTIAL_BODY = (
    b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n{"
)


def _open(port: int, payload: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if payload:
        sock.sendall(payload)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed ``sock`` (EOF or reset), reading without blocking."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
            if not select.select([sock], [], [], 0)[0]:
                return False  # a response without a close (not expected here)
    except OSError:
        return True


def _wait_all_closed(socks: list[socket.socket], timeout: float) -> float:
    t0 = time.monotonic()
    pending = list(socks)
    while pending and time.monotonic() - t0 < timeout:
        pending = [s for s in pending if not _closed_by_server(s)]
        time.sleep(0.05)
    assert not pending, f"{len(pending)} of {len(socks)} stalled connections still open after {timeout} s"
    return time.monotonic() - t0


def test_stalled_clients_are_dropped_within_the_deadline_while_health_answers(server_factory) -> None:
    server = server_factory(["--engine", FAST, "--header-timeout", "1", "--body-timeout", "1"]).start()
    socks = [_open(server.port, PARTIAL_HEADERS) for _ in range(60)]
    socks += [_open(server.port, PARTIAL_BODY) for _ in range(60)]
    socks += [_open(server.port, b"") for _ in range(30)]  # connected, silent
    with httpx.Client(base_url=server.base_url, timeout=5) as c:
        for _ in range(5):
            assert c.get("/v1/health").status_code == 200
    took = _wait_all_closed(socks, 6.0)  # measured here: 1.0-1.1 s after the last one opened
    for s in socks:
        s.close()
    assert took < 3.0, took
    with httpx.Client(base_url=server.base_url, timeout=5) as c:
        assert c.get("/v1/health").status_code == 200


def test_a_slow_body_that_keeps_coming_is_not_dropped(server_factory) -> None:
    server = server_factory(["--engine", FAST, "--header-timeout", "1", "--body-timeout", "1"]).start()
    body = b'{"kind": "fast", "prompt": "slow but steady"}'
    with _open(server.port, b"") as sock:
        head = (
            b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        )
        sock.sendall(head)
        for i in range(0, len(body), 8):  # ~3 s in all, never a second without a byte
            time.sleep(0.5)
            sock.sendall(body[i : i + 8])
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 201"), reply[:200]


def test_connection_limit_answers_503_and_frees_up(server_factory) -> None:
    server = server_factory(["--engine", FAST, "--max-connections", "20", "--header-timeout", "2"]).start()
    idle = [_open(server.port, b"") for _ in range(20)]
    time.sleep(0.2)
    with _open(server.port, b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") as extra:
        reply = extra.recv(65536)
    assert reply.startswith(b"HTTP/1.1 503") and b"too many open connections" in reply, reply
    _wait_all_closed(idle, 5.0)  # the silent ones hit the header deadline
    with httpx.Client(base_url=server.base_url, timeout=5) as c:
        assert c.get("/v1/health").status_code == 200


def test_unauthenticated_connections_are_limited_separately_on_a_network_bind(server_factory) -> None:
    token = "network-token-123"
    args = ["--engine", FAST, "--host", "0.0.0.0", "--token", token, "--max-unauthenticated", "5"]
    server = server_factory([*args, "--header-timeout", "30"], token=token).start()
    with server.client() as authed:  # keeps its connection (keep-alive), authenticated
        assert authed.get("/v1/jobs").status_code == 200
        t0 = time.monotonic()
        anonymous = [_open(server.port, PARTIAL_HEADERS) for _ in range(12)]
        time.sleep(0.3)
        # Only the newest 5 stay: the older 7 are closed at once, long before the 30 s deadline.
        took = _wait_all_closed(anonymous[:7], 5.0)
        assert time.monotonic() - t0 < 5.0, took
        assert not any(_closed_by_server(s) for s in anonymous[7:])
        assert authed.get("/v1/jobs").status_code == 200
        for s in anonymous:
            s.close()
