"""Which GPUs this machine shows, without importing torch (that lives in the workers only)."""

from __future__ import annotations

import os
import shutil
import subprocess

NVIDIA_SMI_TIMEOUT_S = 10.0


def visible_gpus() -> list[str]:
    """CUDA device ids the server may hand to workers: ``CUDA_VISIBLE_DEVICES`` when set, else
    what ``nvidia-smi`` lists; empty on a machine without an NVIDIA driver (one CPU worker then).

    CUDA stops reading ``CUDA_VISIBLE_DEVICES`` at its first invalid entry (``-1`` hides every GPU),
    and so does this.
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = []
        for part in env.split(","):
            part = part.strip()
            if not part or part.startswith("-"):
                break
            ids.append(part)
        return ids
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip().isdigit()]


def plan_workers(workers: int | None, gpus: tuple[str, ...] | None) -> list[str | None]:
    """The GPU of each local worker (None: a CPU worker, ``CUDA_VISIBLE_DEVICES`` left alone).

    ``--gpus 0,1,3``: one worker per listed GPU. ``--workers N``: N workers spread round-robin over
    the visible GPUs, or N CPU workers without one. Neither: one worker per visible GPU, or one.
    """
    if gpus:
        return list(gpus)
    found = visible_gpus()
    if workers is None:
        return list(found) if found else [None]
    if not found:
        return [None] * workers
    return [found[i % len(found)] for i in range(workers)]
