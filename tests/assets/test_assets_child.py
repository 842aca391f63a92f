"""run_cancellable: results and errors come back from the child; a cancel kills it."""

from __future__ import annotations

import multiprocessing
import os
import time

import numpy as np
import pytest

from core.assets.child import ChildFailed, run_cancellable
from core.progress import Cancelled, Reporter


def _square_sum(a: np.ndarray) -> tuple[float, int]:
    return float((a**2).sum()), os.getpid()


def _fail(message: str) -> None:
    raise ValueError(message)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _exit_hard() -> None:
    os._exit(3)


def test_result_comes_back_from_another_process() -> None:
    total, pid = run_cancellable(_square_sum, (np.arange(4.0),), Reporter(), "test", "working")
    assert total == 14.0  # 0 + 1 + 4 + 9
    assert pid != os.getpid()


def test_errors_keep_their_type_and_message() -> None:
    with pytest.raises(ChildFailed, match="ValueError: bad mesh"):
        run_cancellable(_fail, ("bad mesh",), Reporter(), "test", "working")
    with pytest.raises(ChildFailed, match="exit code 3"):
        run_cancellable(_exit_hard, (), Reporter(), "test", "working")


def test_cancel_kills_the_child_quickly() -> None:
    before = set(multiprocessing.active_children())
    start = time.monotonic()
    deadline = start + 0.3
    with pytest.raises(Cancelled):
        run_cancellable(
            _sleep, (60.0,), Reporter(cancel=lambda: time.monotonic() > deadline), "test", "working"
        )
    # Polled every 0.1 s: the cancel lands about 0.4 s in, far from the child's 60 s.
    assert time.monotonic() - start < 10
    assert set(multiprocessing.active_children()) <= before
