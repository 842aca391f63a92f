"""What the panel shows of jobs as they run: each job's newest preview image, and a status-bar line.

Preview images are the files the job flow downloads (``JobUpdate.preview``: the server's
progress image while a text-to-3D job optimises, the finished preview of an avatar). They are
loaded into one ``bpy.utils.previews`` collection, keyed by the job entry and the file's
modification time, so a new image under the same path is shown instead of the cached one.
"""

from __future__ import annotations

import contextlib
import os

import bpy

from .protocol import ACTIVE_STATES

_collection = None


def _previews():
    global _collection
    if _collection is None:
        from bpy.utils import previews as bpy_previews

        _collection = bpy_previews.new()
    return _collection


def preview_of(item):
    """The ``ImagePreview`` of the job's newest preview image, or None when it has none."""
    path = item.preview_path
    if not path:
        return None
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        return None
    key = f"{item.local_id}:{stamp}"
    collection = _previews()
    preview = collection.get(key)
    if preview is None:
        for old in [k for k in collection if k.startswith(f"{item.local_id}:")]:
            del collection[old]  # the previous image of this job
        preview = collection.load(key, path, "IMAGE")
    return preview


def icon_id(item) -> int:
    """The icon id of the job's newest preview image; 0 when it has none, and in background
    Blender, which makes no icons."""
    preview = preview_of(item)
    return preview.icon_id if preview is not None else 0


def active_jobs(context) -> list:
    """Job entries of the context's scene that are submitting, queued or running."""
    scene = getattr(context, "scene", None)
    settings = getattr(scene, "kiln", None)
    if settings is None:
        return []
    return [j for j in settings.jobs if j.state in ACTIVE_STATES or j.state == "submitting"]


def status_text(context) -> str:
    """``"Kiln: a red teapot, train 42%"`` or ``"Kiln: 3 jobs, 42%"`` while jobs run; "" otherwise."""
    jobs = active_jobs(context)
    if not jobs:
        return ""
    if len(jobs) == 1:
        job = jobs[0]
        label = (job.prompt or "job")[:32]
        return f"Kiln: {label}, {job.stage or job.state} {job.progress:.0%}"
    mean = sum(j.progress for j in jobs) / len(jobs)
    return f"Kiln: {len(jobs)} jobs, {mean:.0%}"


def draw_status_bar(self, context) -> None:
    """Appended to the status bar's header: a compact progress line while any job runs."""
    text = status_text(context)
    if not text:
        return
    jobs = active_jobs(context)
    row = self.layout.row(align=True)
    row.label(text=text, icon="SORTTIME")
    if hasattr(row, "progress"):  # 4.0+
        row.progress(factor=sum(j.progress for j in jobs) / len(jobs), type="RING", text="")


def register() -> None:
    header = getattr(bpy.types, "STATUSBAR_HT_header", None)
    if header is not None:
        header.append(draw_status_bar)


def unregister() -> None:
    global _collection
    header = getattr(bpy.types, "STATUSBAR_HT_header", None)
    if header is not None:
        with contextlib.suppress(ValueError):
            header.remove(draw_status_bar)
    if _collection is not None:
        from bpy.utils import previews as bpy_previews

        bpy_previews.remove(_collection)
        _collection = None
