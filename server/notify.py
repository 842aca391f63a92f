"""Change announcements from any thread to the asyncio handlers waiting on a job (SSE)."""

from __future__ import annotations

import asyncio


class Notifier:
    """Per-job wake-ups: ``publish`` from any thread, ``waiter`` + ``await`` on the event loop.

    A handler takes ``waiter(job_id)`` *before* reading the store, so a change committed
    between its read and its wait still wakes it.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, asyncio.Event] = {}
        self.closed = False
        """True once the server is stopping: event streams end instead of waiting."""

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def waiter(self, job_id: str) -> asyncio.Event:
        """The event set on the next change of ``job_id`` (call on the event loop)."""
        event = self._events.get(job_id)
        if event is None:
            event = self._events[job_id] = asyncio.Event()
        return event

    def publish(self, job_id: str) -> None:
        """Announce a committed change of ``job_id`` (thread-safe)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._fire(job_id)
        else:
            loop.call_soon_threadsafe(self._fire, job_id)

    def _fire(self, job_id: str) -> None:
        event = self._events.pop(job_id, None)
        if event is not None:
            event.set()

    def close(self) -> None:
        """The server is stopping: wake every waiter so open event streams end now (thread-safe)."""
        self.closed = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._fire_all)

    def _fire_all(self) -> None:
        events, self._events = self._events, {}
        for event in events.values():
            event.set()
