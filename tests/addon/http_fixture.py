"""A scriptable stdlib HTTP server on loopback for the add-on's client tests (no bpy)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    """What to answer: status, JSON (or raw bytes), extra headers, a delay, or a dropped connection."""

    status: int = 200
    json: Any = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    """Close the socket without answering (a server that died mid-request)."""
    short_by: int = 0
    """Announce this many more bytes than are sent, then close (a download cut off)."""


Route = Callable[[Seen], Reply]


class ScriptedServer:
    """Routes ``(method, path)`` to callables; records every request in ``seen``."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        self.seen: list[Seen] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                outer.seen.append(seen)
                route = outer.routes.get((self.command, self.path.split("?")[0]))
                reply = route(seen) if route else Reply(404, {"detail": "no such route in the test server"})
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                data = reply.raw if reply.raw is not None else json.dumps(reply.json).encode()
                ctype = "application/json" if reply.raw is None else "application/octet-stream"
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.headers.get("Content-Type", ctype))
                    self.send_header("Content-Length", str(len(data) + reply.short_by))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first (timeout tests)
                self.close_connection = True

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def do_DELETE(self) -> None:
                self._handle()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> ScriptedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def route(self, method: str, path: str, reply: Route | Reply) -> None:
        self.routes[(method, path)] = reply if callable(reply) else (lambda _seen, r=reply: r)


def job_json(job_id: str = "a" * 32, state: str = "queued", **extra: Any) -> dict[str, Any]:
    data = {
        "id": job_id,
        "kind": "avatar",
        "state": state,
        "stage": "",
        "progress": 0.0,
        "eta_seconds": None,
        "message": "",
        "error": None,
        "params": {"seed": 7},
        "artifacts": [],
    }
    data.update(extra)
    return data
