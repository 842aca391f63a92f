"""ASGI guards in front of the app: request body limits, Host and Origin checks."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _host_name(host: str) -> str | None:
    """'127.0.0.1:8765' -> '127.0.0.1', '[::1]:8765' -> '::1'; None when it is no host[:port].

    Only a name and digits after one colon pass: '127.0.0.1:1@evil.example' (user-info
    tricks), a path or a space are not a Host header this server answers.
    """
    if host.startswith("["):
        end = host.find("]")
        rest = host[end + 1 :] if end > 0 else "?"
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        return host[1:end]
    name, colon, port = host.partition(":")
    if colon and not port.isdigit():
        return None
    if not name or any(c in name for c in "@/\\?# %"):
        return None
    return name


class ServerTiming:
    """Add ``Server-Timing: app;dur=<ms>`` (request received to response start) to every response.

    Lets clients and bench/server.py tell server time from network and client queueing.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                dur = f"app;dur={(time.perf_counter() - t0) * 1e3:.2f}".encode()
                message = {**message, "headers": [*message.get("headers", []), (b"server-timing", dur)]}
            await send(message)

        await self.app(scope, receive, timed_send)


class BodyLimit:
    """Refuse request bodies over a size limit with 413, by Content-Length or as they stream."""

    def __init__(self, app: ASGIApp, default: int, by_path: dict[str, int]) -> None:
        self.app = app
        self.default = default
        self.by_path = by_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.by_path.get(scope["path"], self.default)
        what = f"request bodies on {scope['path']} are limited to {limit / 1e6:.2f} MB"
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _reply(send, 413, f"the request is too large: {what}")
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, f"the request is too large: {what}")
            return message

        await self.app(scope, limited, send)


class HostOriginGuard:
    """Refuse unexpected Host headers (DNS rebinding) and cross-site browser requests.

    ``allowed_hosts`` None accepts any Host (a token guards a non-loopback bind).
    A request with an ``Origin`` header passes only from the server's own origin
    (the /docs page) or an origin in ``allowed_origins`` (``--cors-origin``).
    """

    def __init__(self, app: ASGIApp, allowed_hosts: set[str] | None, allowed_origins: set[str]) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.allowed_origins = allowed_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host") or ""
        name = _host_name(host)
        if self.allowed_hosts is not None and (name is None or name.lower() not in self.allowed_hosts):
            await _reply(
                send, 400, f"unexpected Host header {host!r}; connect to the server by its bind address"
            )
            return
        origin = _header(scope, b"origin")
        if (
            origin is not None
            and origin not in self.allowed_origins
            and origin
            not in (
                f"http://{host}",
                f"https://{host}",
            )
        ):
            await _reply(
                send,
                403,
                "cross-site requests are refused; start the server with --cors-origin ORIGIN to allow one",
            )
            return
        await self.app(scope, receive, send)
