"""Connection guard: read deadlines and connection limits in front of uvicorn's HTTP/1.1 protocol.

uvicorn closes an idle keep-alive connection, but not one that stalls inside a request: a client
that sends half its headers, or announces a body and never sends it, holds its connection (and
a file descriptor) for ever. This protocol adds

- a header deadline: a connection must deliver a request's complete headers within
  ``header_timeout_s`` of its first byte (or of connecting);
- a body deadline: a request body may go ``body_timeout_s`` without a byte (unless the server
  itself paused reading, as it does while the app is busy with what it has);
- a limit on open connections: beyond ``max_connections`` a new one gets 503 and is closed;
- on a non-loopback bind with a token, a limit on connections that have not yet sent the
  token (``max_unauthenticated``): beyond it the oldest of them is closed, so anonymous
  clients cannot use up the descriptors an authenticated client needs.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections import OrderedDict
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("kiln.server")


class ConnectionGuard:
    """The shared counts and settings of every guarded connection of one server."""

    def __init__(
        self,
        header_timeout_s: float,
        body_timeout_s: float,
        max_connections: int,
        max_unauthenticated: int | None = None,
        token: str | None = None,
    ) -> None:
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.max_connections = max_connections
        self.max_unauthenticated = max_unauthenticated if token else None
        self.expected_auth = f"Bearer {token}".encode() if token else None
        self.open: set[GuardedProtocol] = set()
        self.unauthenticated: OrderedDict[GuardedProtocol, None] = OrderedDict()
        self.dropped = {"header_timeout": 0, "body_timeout": 0, "over_limit": 0, "unauthenticated": 0}
        """Connections closed by each rule since start (for logs and tests)."""

    def protocol_class(self) -> type[GuardedProtocol]:
        """uvicorn's ``http=`` protocol class, bound to this guard."""
        return type("GuardedH11Protocol", (GuardedProtocol,), {"guard": self})


_BUSY_BODY = json.dumps(
    {"detail": "the server has too many open connections; close idle ones and retry"}
).encode()
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    + f"content-length: {len(_BUSY_BODY)}\r\n".encode()
    + b"connection: close\r\nretry-after: 1\r\n\r\n"
    + _BUSY_BODY
)


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol with the deadlines and limits of ``guard``."""

    guard: ConnectionGuard

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        self._timer: asyncio.TimerHandle | None = None
        self._timer_kind = ""
        if len(guard.open) >= guard.max_connections:
            guard.dropped["over_limit"] += 1
            transport.write(_BUSY)
            transport.close()
            return
        guard.open.add(self)
        if guard.max_unauthenticated is not None:
            guard.unauthenticated[self] = None
            while len(guard.unauthenticated) > guard.max_unauthenticated:
                oldest, _ = guard.unauthenticated.popitem(last=False)
                guard.dropped["unauthenticated"] += 1
                oldest._drop()
        self._arm("header", guard.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard.open.discard(self)
        self.guard.unauthenticated.pop(self, None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._after_events()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._after_events()

    # -- deadlines -----------------------------------------------------------------------------

    def _after_events(self) -> None:
        """Arm the deadline of the phase the connection is in now."""
        if self.transport.is_closing():
            return
        their = self.conn.their_state
        if self.headers is not None and self in self.guard.unauthenticated:
            self._check_token()
        if their is h11.SEND_BODY:
            self._arm("body", self.guard.body_timeout_s)  # restarted on every chunk
        elif their is h11.IDLE and self.conn.trailing_data[0]:
            if self._timer_kind != "header":  # a deadline for the whole header, not per byte
                self._arm("header", self.guard.header_timeout_s)
        elif their is h11.IDLE and self._timer_kind == "header" and self.cycle is None:
            pass  # connected, nothing sent yet: the deadline from connection_made stands
        else:
            self._disarm()  # a request being answered, or idle keep-alive (uvicorn's own timer)

    def _arm(self, kind: str, seconds: float) -> None:
        self._disarm()
        self._timer_kind = kind
        self._timer = self.loop.call_later(seconds, self._deadline, kind)

    def _disarm(self) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()
        self._timer, self._timer_kind = None, ""

    def _deadline(self, kind: str) -> None:
        self._timer, self._timer_kind = None, ""
        if self.transport.is_closing():
            return
        their = self.conn.their_state
        if kind == "body" and their is h11.SEND_BODY:
            if self.flow.read_paused:  # our side is not reading: not the client's stall
                self._arm("body", self.guard.body_timeout_s)
                return
        elif kind == "header" and their is h11.IDLE and (self.cycle is None or self.cycle.response_complete):
            pass
        else:
            return
        self.guard.dropped[f"{kind}_timeout"] += 1
        log.debug("closing %s: no complete request %s within the deadline", self.client, kind)
        self._drop()

    def _drop(self) -> None:
        self._disarm()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()

    # -- authentication ------------------------------------------------------------------------

    def _check_token(self) -> None:
        expected = self.guard.expected_auth
        given = next((v for k, v in self.headers if k == b"authorization"), b"")
        if expected is not None and hmac.compare_digest(given, expected):
            self.guard.unauthenticated.pop(self, None)


def uvicorn_settings(guard: ConnectionGuard) -> dict[str, Any]:
    """The ``uvicorn.Config`` arguments that put ``guard`` in front of the app."""
    return {"http": guard.protocol_class()}
