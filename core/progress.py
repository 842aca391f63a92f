"""Progress reporting and cooperative cancellation shared by every long step."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class Cancelled(Exception):
    """Raised inside a step when the caller asked to stop; nothing half-made is kept."""


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report.

    Attributes:
        stage: short machine name of the step ("extract", "bake", "sample", ...).
        fraction: overall progress of the whole job in [0, 1].
        message: a line a person can read.
        preview: optional path of a preview image written by the step.
    """

    stage: str
    fraction: float
    message: str = ""
    preview: Path | None = None


ProgressCallback = Callable[[ProgressEvent], None]
CancelCheck = Callable[[], bool]


@dataclass
class Reporter:
    """Maps a step's local progress [0, 1] onto a slice [start, end] of the whole job.

    Every call also checks for cancellation, so a step that reports often stops
    within one report interval. Steps take a Reporter and hand sub-reporters to
    their own sub-steps::

        def extract(field, reporter=Reporter()):
            for i, chunk in enumerate(chunks):
                reporter("extract", i / len(chunks))
                ...

        mesh = extract(field, reporter.sub(0.0, 0.4))
    """

    callback: ProgressCallback | None = None
    cancel: CancelCheck | None = None
    start: float = 0.0
    end: float = 1.0
    _last_emit: float = field(default=0.0, repr=False)
    min_interval: float = 0.0
    """Seconds between emitted events (cancellation is still checked every call)."""

    def check(self) -> None:
        """Raise Cancelled if the caller asked to stop."""
        if self.cancel is not None and self.cancel():
            raise Cancelled("cancelled by request")

    def __call__(self, stage: str, fraction: float, message: str = "", preview: Path | None = None) -> None:
        self.check()
        if self.callback is None:
            return
        now = time.monotonic()
        final = fraction >= 1.0
        if not final and preview is None and now - self._last_emit < self.min_interval:
            return
        self._last_emit = now
        f = min(max(float(fraction), 0.0), 1.0)
        self.callback(ProgressEvent(stage, self.start + (self.end - self.start) * f, message, preview))

    def sub(self, start: float, end: float) -> Reporter:
        """A reporter for a sub-step covering [start, end] of this reporter's range."""
        span = self.end - self.start
        return Reporter(
            self.callback,
            self.cancel,
            self.start + span * start,
            self.start + span * end,
            min_interval=self.min_interval,
        )


class ProgressBar:
    """A command line's progress bar: tqdm on stderr, fed by a Reporter's events."""

    def __init__(self, total: int = 1000) -> None:
        from tqdm import tqdm

        self.total = total
        self.bar = tqdm(
            total=total,
            file=sys.stderr,
            dynamic_ncols=True,
            bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}",
        )

    def __call__(self, event: ProgressEvent) -> None:
        n = int(round(min(max(event.fraction, 0.0), 1.0) * self.total))
        self.bar.update(n - self.bar.n)
        self.bar.set_description_str(event.stage, refresh=False)
        self.bar.set_postfix_str(event.message[:80])
        if n >= self.total:
            self.bar.close()
