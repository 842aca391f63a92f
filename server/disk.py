"""Disk space: what a full disk looks like in errors, the free-space floor, and a small reserve.

A full disk shows up as ``OSError`` ENOSPC/EDQUOT, as SQLite's "database or disk is full",
or (from ``torch.save``) as a ``RuntimeError`` about a failed or short write. Each of them
becomes one sentence an operator can act on: ``disk_full_reason``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sqlite3
from pathlib import Path

log = logging.getLogger("kiln.server")

RESERVE_NAME = ".space-reserve"
"""A file of RESERVE_BYTES kept in the data folder, deleted when the disk fills so the server
can still record why the running job stopped, and made again once space is back."""
RESERVE_BYTES = 4 * 1024 * 1024

_TORCH_WRITE_FAILURES = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")


def is_disk_full(exc: BaseException | None) -> bool:
    """True when ``exc`` (or what caused it) is the disk or a quota running out."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, sqlite3.Error):
            code = getattr(exc, "sqlite_errorcode", None)
            if code == sqlite3.SQLITE_FULL or "disk is full" in str(exc):
                return True
        if isinstance(exc, RuntimeError) and any(s in str(exc) for s in _TORCH_WRITE_FAILURES):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def free_mb(path: Path) -> float:
    """Free megabytes (10^6 bytes) on the filesystem holding ``path`` (its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free / 1e6
    except OSError:
        return 0.0


def disk_full_reason(data_dir: Path, then: str = "press Resume") -> str:
    """The one sentence a job fails with when the disk is full (``then``: what to do after freeing)."""
    return (
        f"the disk is full (data folder {data_dir}, {free_mb(data_dir):.0f} MB free); free space and {then}"
    )


def below_floor_reason(data_dir: Path, floor_mb: float) -> str:
    """Why a submission is refused while free space is under ``--min-free-mb``."""
    return (
        f"the disk is full (data folder {data_dir}, {free_mb(data_dir):.0f} MB free, "
        f"the server keeps {floor_mb:.0f} MB free, --min-free-mb); free space and submit again"
    )


class Reserve:
    """The reserve file: ``release()`` frees its space for a last store write, ``restore()`` remakes it."""

    def __init__(self, data_dir: Path, floor_mb: float) -> None:
        self.path = Path(data_dir) / RESERVE_NAME
        self.floor_mb = floor_mb

    def restore(self) -> None:
        """(Re)create the reserve when there is room for it above the floor; never raises."""
        try:
            if self.path.is_file() and self.path.stat().st_size >= RESERVE_BYTES:
                return
            if free_mb(self.path.parent) < self.floor_mb + 2 * RESERVE_BYTES / 1e6:
                return
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "wb") as fh:
                fh.write(b"\0" * RESERVE_BYTES)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.debug("space reserve not made: %s", exc)
            with contextlib.suppress(OSError):
                self.path.with_name(self.path.name + ".tmp").unlink()

    def release(self) -> bool:
        """Delete the reserve; True when there was one to free."""
        try:
            self.path.unlink()
        except OSError:
            return False
        log.warning(
            "disk full: released the %d MB space reserve in %s", RESERVE_BYTES >> 20, self.path.parent
        )
        return True
