"""Atomic file writes: a full disk or a crash never leaves a half-written file under the real name."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

_WRITE_FAILURES = ("unexpected pos", "file write failed", "PytorchStreamWriter failed", "No space left")
"""How torch.save reports a write the disk refused (as RuntimeError, not OSError)."""


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` through ``write(handle)``: a temporary file, fsync, then ``os.replace``.

    Whatever fails, ``path`` keeps its previous content (or stays absent) and the temporary
    file is removed. A write the disk refused is raised as ``OSError(ENOSPC)`` naming the
    file, whatever form the writer gave it (torch.save's is "unexpected pos 768 vs 662").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
        if not full and isinstance(exc, RuntimeError) and any(s in str(exc) for s in _WRITE_FAILURES):
            raise OSError(errno.ENOSPC, f"No space left on device while writing {path}", str(path)) from exc
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a power cut
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path
