"""Run a blocking native call in a forked child process, so that a cancel can kill it."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any

from core.progress import Reporter


class ChildFailed(RuntimeError):
    """The work raised in the child, or the child died; the message says which."""


def _die_with_parent() -> None:
    """Linux: have the kernel kill this child if its parent dies (e.g. a killed worker)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not glibc: the child still ends on its own when the work returns


def _child(conn, func: Callable[..., Any], args: tuple) -> None:  # pragma: no cover - runs in the child
    _die_with_parent()
    try:
        conn.send(("ok", func(*args)))
    except Exception as exc:  # hand any failure to the parent instead of dying silently
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_cancellable(
    func: Callable[..., Any], args: tuple, reporter: Reporter, stage: str, message: str, poll: float = 0.1
) -> Any:
    """Return ``func(*args)``, computed in a forked child while the reporter is polled.

    Native libraries such as xatlas and fast-simplification hold the GIL for their whole
    run, so neither a thread nor a signal handler can interrupt them; a child process can
    be killed. The reporter is called every ``poll`` seconds with a progress that creeps
    toward 0.9 (the work's length is unknown); when it raises ``Cancelled`` the child is
    killed at once. Without ``fork``, or inside a daemonic process (which may not have
    children), the work runs inline and a cancel lands when it returns.

    Raises:
        ChildFailed: the work raised (its type and message are kept) or the child died.
    """
    if "fork" not in multiprocessing.get_all_start_methods() or multiprocessing.current_process().daemon:
        reporter(stage, 0.1, f"{message} (not cancellable here)")
        try:
            return func(*args)
        except Exception as exc:
            raise ChildFailed(f"{type(exc).__name__}: {exc}") from exc
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, func, args), daemon=True)
    proc.start()
    child.close()
    try:
        waited = 0.0
        while not parent.poll(poll):
            waited += poll
            reporter(stage, min(0.9, waited / (waited + 3.0)), message)
            if not proc.is_alive() and not parent.poll(0):
                raise ChildFailed(f"the worker process died (exit code {proc.exitcode})")
        status, payload = parent.recv()
    except EOFError as exc:  # the child closed the pipe without an answer: it died
        proc.join(timeout=5)
        raise ChildFailed(f"the worker process died (exit code {proc.exitcode})") from exc
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        parent.close()
    if status != "ok":
        raise ChildFailed(payload)
    return payload
