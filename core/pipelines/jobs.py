"""One entry point for every job kind, used by the server worker and batch scripts."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from core.progress import Reporter

# kind -> "module:function"; each function has the signature of `run_job` minus `kind`
# and returns {artifact name: path inside work_dir}.
ENGINES: dict[str, str] = {
    "avatar": "core.pipelines.avatar:run_avatar_job",
    "photo_avatar": "core.pipelines.photo_avatar:run_photo_avatar_job",
    "text_to_3d": "core.pipelines.text_to_3d:run_text_to_3d_job",
}


class JobError(Exception):
    """A job failed for a reason a person can act on; the message says what to do."""


def run_job(kind: str, params: dict[str, Any], work_dir: Path, reporter: Reporter) -> dict[str, Path]:
    """Run one job to completion.

    Args:
        kind: one of ``ENGINES``.
        params: the validated request (see docs/API.md): prompt, seed, preset, attributes,
            output options; for ``photo_avatar`` also ``photo_path``.
        work_dir: a folder owned by this job. Engines keep checkpoints under
            ``work_dir / "checkpoints"`` and resume from them when present, so a job
            restarted after a crash continues where it stopped.
        reporter: progress and cancellation (raises ``core.progress.Cancelled``).

    Returns:
        Artifact name (``asset.glb``, ``turntable.mp4``, ``preview.png``,
        ``attributes.json``) to the finished file's path inside ``work_dir``.
    """
    if kind not in ENGINES:
        raise JobError(f"unknown job kind {kind!r}; use one of {sorted(ENGINES)}")
    module_name, func_name = ENGINES[kind].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    work_dir.mkdir(parents=True, exist_ok=True)
    return func(params, work_dir, reporter)
