"""Jobs on the main thread: start them (thread or blocking), apply updates to ``Scene.kiln.jobs``.

Interactive Blender: each job runs on a `JobThread`; one app timer drains the updates and is the
only code that writes bpy data. Background Blender (``bpy.app.background``, timers never fire):
`run_blocking` runs the same flow inline and applies each update as it comes.
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from pathlib import Path

import bpy

from . import importer, localserver
from .client import KilnError
from .jobflow import JobSpec, JobThread, JobUpdate, file_stem_from_text, run_job_flow
from .jobregistry import Fields, JobRegistry
from .preferences import client_settings
from .protocol import ACTIVE_STATES, ATTRIBUTES_ARTIFACT, GLB_ARTIFACT, AttributeReport, JobRequest

PUMP_INTERVAL = 0.25
_threads: dict[str, JobThread] = {}
_registry = JobRegistry()
"""Every job entry followed in this session, outside bpy data: undo cannot take it away."""


def ui_is_live() -> bool:
    """True when timers fire (interactive Blender); False in ``blender -b`` and the bpy module.

    Operators take their non-blocking path only when this is True. (Tests replace it to drive
    the interactive path in the bpy module, calling the pump by hand in place of the timer.)
    """
    return not bpy.app.background


def find_job(local_id: str):
    """(scene, job item) for ``local_id`` in any scene, or (None, None)."""
    for scene in bpy.data.scenes:
        settings = getattr(scene, "kiln", None)
        if settings is None:
            continue
        for item in settings.jobs:
            if item.local_id == local_id:
                return scene, item
    return None, None


def item_fields(item) -> Fields:
    """A job entry as plain data (every property; collections as lists of dicts), for the registry."""
    out: Fields = {}
    for prop in item.bl_rna.properties:
        if prop.type == "COLLECTION":  # read-only in RNA, yet filled by add()
            out[prop.identifier] = [item_fields(e) for e in getattr(item, prop.identifier)]
        elif not prop.is_readonly and prop.type != "POINTER":
            out[prop.identifier] = getattr(item, prop.identifier)
    return out


def job_lists() -> dict[str, object]:
    """Scene name -> its job list, for every scene."""
    return {s.name: s.kiln.jobs for s in bpy.data.scenes if getattr(s, "kiln", None) is not None}


def track(scene, item) -> None:
    """Remember the entry in the registry, so an undo that drops or rolls it back is repaired."""
    _registry.remember(scene.name, item_fields(item))


def untrack(local_id: str) -> None:
    _registry.forget(local_id)


def refresh_tracked() -> None:
    """Copy the current state of every tracked entry into the registry (before an undo, each tick)."""
    _registry.refresh(job_lists(), item_fields)


def reconcile_tracked(missing_only: bool = False):
    """Put back tracked entries an undo removed (and, unless ``missing_only``, rolled back).

    An entry brought back may name an object the same undo removed; that name is cleared so
    Import Result brings the asset in again. Returns the registry's `Reconciled`.
    """
    result = _registry.reconcile(job_lists(), missing_only=missing_only)
    for local_id in result.dropped:
        forget_thread(local_id)
    for local_id in result.restored + result.rolled_forward:
        scene, item = find_job(local_id)
        if item is None:
            continue
        if item.object_name and item.object_name not in bpy.data.objects:
            item.object_name = ""
        track(scene, item)
    return result


def new_job_item(scene: bpy.types.Scene, request: JobRequest | None, label: str = ""):
    """Add an entry to the scene's job list (saved in the .blend) and make it active."""
    jobs = scene.kiln.jobs
    item = jobs.add()
    item.local_id = uuid.uuid4().hex
    item.state = "submitting"
    if request is not None:
        item.kind = request.kind
        item.prompt = label or request.prompt
        item.seed = request.seed if request.seed is not None else -1
    item.rig = scene.kiln.rig
    scene.kiln.active_job_index = len(jobs) - 1
    track(scene, item)
    return item


def write_report(item, report: AttributeReport | None, path=None) -> None:
    """Show in the entry how the server read the request: attributes used, notes (attributes.json)."""
    item.made_with.clear()
    item.notes.clear()
    item.attributes_path = str(path) if path else ""
    if report is None:
        return
    for used, attrs in ((True, report.attributes), (False, report.unsure)):
        for attr in attrs:
            entry = item.made_with.add()
            entry.key, entry.value, entry.source, entry.used = attr.name, attr.value, attr.source, used
            entry.confidence = -1.0 if attr.confidence is None else attr.confidence
    for kind, texts in (
        ("unknown_word", report.unknown_words),
        ("conflict", report.conflicts),
        ("warning", report.warnings),
    ):
        for text in texts:
            note = item.notes.add()
            note.kind, note.text = kind, text


def provenance(item) -> dict:
    """Custom properties for the imported object: where it came from, kept in the .blend.

    ``kiln_job_id``, ``kiln_seed``, ``kiln_kind``; for avatars also ``kiln_attributes`` (name ->
    value the model was conditioned on), ``kiln_attribute_sources`` (name -> photo, prompt or
    request), ``kiln_unknown_words``, ``kiln_conflicts`` and the whole ``kiln_attributes_json``.
    """
    props = {"job_id": item.job_id, "seed": item.seed if item.seed >= 0 else None, "kind": item.kind}
    used = [a for a in item.made_with if a.used]
    if used:
        props["attributes"] = {a.key: a.value for a in used}
        props["attribute_sources"] = {a.key: a.source for a in used if a.source}
    if item.made_with or item.notes:
        props["unknown_words"] = [n.text for n in item.notes if n.kind == "unknown_word"]
        props["conflicts"] = [n.text for n in item.notes if n.kind == "conflict"]
    path = Path(item.attributes_path) if item.attributes_path else None
    if path is not None and path.is_file():
        with contextlib.suppress(OSError, UnicodeDecodeError):  # provenance is a bonus, never a failure
            props["attributes_json"] = path.read_text(encoding="utf-8")
    return props


def is_running(local_id: str) -> bool:
    thread = _threads.get(local_id)
    return thread is not None and thread.alive


def apply_update(context, scene, item, update: JobUpdate) -> bpy.types.Object | None:
    """Write one update into the job item; on success import the GLB if asked. Main thread only."""
    job = update.job
    if job is not None:
        item.job_id = job.id
        item.kind = job.kind
        item.state = job.state
        item.stage = job.stage
        item.progress = job.progress
        item.message = job.message
        if job.seed is not None:
            item.seed = job.seed
    if update.preview is not None:
        item.preview_path = str(update.preview)
    if not update.done:
        return None
    if update.error:
        # "connection refused" becomes what to do: the local server is stopped or died, with its log.
        hint = localserver.connection_hint(update.error)
        item.error = update.error if hint == update.error else f"{update.error.rstrip('.')}. {hint}"
        if job is None:
            item.state = "failed"
        return None
    item.error = ""
    glb = update.files.get(GLB_ARTIFACT)
    if glb is not None:
        item.glb_path = str(glb)
    write_report(item, update.report, update.files.get(ATTRIBUTES_ARTIFACT))
    if item.auto_import and glb is not None:
        return import_job_result(context, scene, item)
    return None


def import_job_result(context, scene, item) -> bpy.types.Object | None:
    """Import the job's GLB into ``scene``; errors go to ``item.error`` and are re-raised."""
    path = Path(item.glb_path)
    if not item.glb_path or not path.is_file():
        item.error = "the job has no downloaded GLB yet; wait for it to finish"
        raise KilnError(item.error)
    original = bpy.data.objects.get(item.variant_of) if item.variant_of else None
    props = provenance(item)
    location = None
    if original is not None:  # a variant stands beside its original
        from .turntable import world_bounds

        _, radius = world_bounds(original)
        base = original.matrix_world.translation
        location = (base[0] + 2.4 * radius, base[1], base[2])
        props["variant_of"] = original.name
    try:
        obj = importer.import_glb(
            context, path, item.prompt, props, scene=scene, rig=item.rig, location=location
        )
    except (OSError, ValueError, RuntimeError) as ex:
        item.error = f"import failed: {ex}"
        raise KilnError(item.error) from ex
    item.object_name = obj.name
    if original is not None:
        original["kiln_variants"] = [*original.get("kiln_variants", []), obj.name]
    return obj


def make_spec(item, request: JobRequest | None, photo: Path | None, out_root: Path) -> JobSpec:
    stem = file_stem_from_text(item.prompt or (photo.stem if photo else ""), default="kiln_asset")
    if not item.out_dir:
        item.out_dir = str(out_root / f"{stem}_{item.local_id[:8]}")
    return JobSpec(
        request=request, photo=photo, job_id=item.job_id, out_dir=Path(item.out_dir), file_stem=stem
    )


def progress_line(label: str, job) -> str:
    """One job's progress as background Blender prints it."""
    return f"kiln: {label[:40]}: {job.state} {job.stage} {job.progress:.0%} {job.message}".rstrip()


def run_blocking(context, scene, item, spec: JobSpec, settings=None, verbose: bool = True) -> JobUpdate:
    """Run the job inline (background Blender), applying updates as they come.

    ``settings`` (a `ClientSettings`) defaults to the add-on preferences.
    """
    settings = settings or client_settings(context)
    client = settings.client()
    label = item.prompt or item.local_id

    printed: list[str] = [""]

    def on_update(update: JobUpdate) -> None:
        apply_update(context, scene, item, update)
        if verbose and update.job is not None and not update.done:
            line = progress_line(label, update.job)
            if line != printed[0]:
                print(line, flush=True)
                printed[0] = line

    # Import errors raise out of apply_update on the final update; keep them in the item.
    try:
        return run_job_flow(client, spec, on_update, poll_interval=settings.poll_interval)
    except KilnError as ex:
        print(f"kiln: {ex}", file=sys.stderr, flush=True)
        return JobUpdate(job=None, error=str(ex), done=True)


def run_many(context, scene, jobs: list, settings=None, verbose: bool = True) -> list[JobUpdate]:
    """Run several jobs at once (background Blender): every job is submitted at the start, so a
    server with several workers (``--workers``, ``--gpus``, ``--ray``) runs them side by side;
    updates are applied here on the main thread as they come. ``jobs`` holds (item, spec) pairs;
    returns each job's final update, in that order. Ctrl-C cancels the jobs still running."""
    settings = settings or client_settings(context)
    threads = [
        (item, JobThread(settings.client(), spec, settings.poll_interval).start()) for item, spec in jobs
    ]
    finals: dict[int, JobUpdate] = {}
    printed: dict[int, str] = {}
    try:
        while len(finals) < len(threads):
            for index, (item, thread) in enumerate(threads):
                if index in finals:
                    continue
                alive = thread.alive  # read before draining, as the pump does
                for update in thread.drain():
                    try:
                        apply_update(context, scene, item, update)
                    except KilnError as ex:  # an import error on the final update
                        update = JobUpdate(job=update.job, error=str(ex), done=True)
                    if verbose and update.job is not None and not update.done:
                        line = progress_line(item.prompt or item.local_id, update.job)
                        if line != printed.get(index):
                            print(line, flush=True)
                            printed[index] = line
                    if update.done:
                        finals[index] = update
                if not alive and index not in finals:
                    finals[index] = JobUpdate(
                        job=None, error="the job follower ended without an answer", done=True
                    )
            time.sleep(0.05)
    except KeyboardInterrupt:
        for _, thread in threads:
            thread.cancel()
        for _, thread in threads:
            thread.join(10)
        raise
    return [finals[i] for i in range(len(threads))]


def run_or_start(context, item, spec: JobSpec) -> str:
    """An operator's job: run to the end here in background Blender, on a worker thread in the UI.

    Returns the error text for the operator to report ("" when none); a job that could not start
    is marked failed with it."""
    try:
        if not ui_is_live():
            return run_blocking(context, context.scene, item, spec).error
        start_thread(context, item, spec)
    except KilnError as ex:
        item.state, item.error = "failed", str(ex)
        return str(ex)
    return ""


def start_thread(context, item, spec: JobSpec) -> None:
    """Run the job on a worker thread; the pump timer applies its updates."""
    settings = client_settings(context)
    client = settings.client()
    _threads[item.local_id] = JobThread(client, spec, poll_interval=settings.poll_interval).start()
    scene, _ = find_job(item.local_id)
    if scene is not None:
        track(scene, item)
    ensure_pump()


def cancel(item) -> bool:
    """Ask a running thread to cancel its job; False when no thread runs it here."""
    thread = _threads.get(item.local_id)
    if thread is None or not thread.alive:
        return False
    thread.cancel()
    item.message = "cancelling…"
    return True


def forget_thread(local_id: str) -> None:
    thread = _threads.pop(local_id, None)
    if thread is not None:
        thread.detach()


def forget(item) -> None:
    """Stop following the item's job here (it keeps running on the server); the artist removed it."""
    forget_thread(item.local_id)
    untrack(item.local_id)


def ensure_pump() -> None:
    if not bpy.app.timers.is_registered(_pump):
        bpy.app.timers.register(_pump, first_interval=PUMP_INTERVAL, persistent=True)


def notify(message: str, level: str = "ERROR") -> None:
    """Show a message in the status bar from a timer (no operator of ours is running)."""
    try:
        bpy.ops.kiln.report(message=message, level=level)
    except (RuntimeError, AttributeError):
        print(f"kiln: {message}", file=sys.stderr)


def _redraw() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    for window in getattr(wm, "windows", ()):
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "PREFERENCES", "SEQUENCE_EDITOR", "STATUSBAR"}:
                area.tag_redraw()


def _pump() -> float | None:
    """Timer: drain every worker's updates onto the main thread's bpy data."""
    # An undo since the last tick may have dropped entries of running jobs: put them back first.
    reconcile_tracked(missing_only=True)
    for local_id, thread in list(_threads.items()):
        # Read `alive` before draining: a worker that puts its final update and ends between
        # the drain and a later check would otherwise lose that update (the job would never
        # finish here). Dead before the drain means the drain holds everything it sent.
        alive = thread.alive
        updates = thread.drain()
        scene, item = find_job(local_id)
        if item is None:
            # The artist removed the entry, or the file was closed; stop following the job.
            thread.detach()
            _threads.pop(local_id, None)
            continue
        for update in updates:
            try:
                obj = apply_update(bpy.context, scene, item, update)
            except KilnError as ex:
                notify(f"Kiln: {ex}")
                continue
            except Exception as ex:  # an exception would end the timer, and with it every job
                item.error = f"could not apply the job's update: {type(ex).__name__}: {ex}"
                notify(f"Kiln: {item.error}")
                continue
            if update.done:
                if update.error and update.error != "cancelled":
                    notify(f"Kiln: {update.error}")
                elif obj is not None:
                    notify(f"Kiln: imported {obj.name}", "INFO")
                    if item.turntable:
                        _start_turntable_after(obj)
        if local_id not in _registry:  # followed since before another file was loaded
            track(scene, item)
        if not alive:
            _threads.pop(local_id, None)
    refresh_tracked()
    _redraw()
    return PUMP_INTERVAL if _threads else None


def _start_turntable_after(obj) -> None:
    # A timer runs without a window in its context, and the interactive render opens its
    # render view in one: lend it the first window, as Blender's own UI would have.
    wm = getattr(bpy.context, "window_manager", None)
    window = wm.windows[0] if wm is not None and len(wm.windows) else None
    try:
        if window is not None and bpy.context.window is None:
            with bpy.context.temp_override(window=window, screen=window.screen):
                bpy.ops.kiln.render_turntable("INVOKE_DEFAULT", object_name=obj.name)
        else:
            bpy.ops.kiln.render_turntable("INVOKE_DEFAULT", object_name=obj.name)
    except RuntimeError as ex:
        notify(f"Kiln: turntable failed: {ex}")


def resume_jobs(context, scenes=None) -> int:
    """Follow again every job of the given scenes that was still active when last seen.

    Interactive: on worker threads. Background: blocking. Returns how many were resumed.
    """
    count = 0
    settings = client_settings(context)
    for scene in scenes if scenes is not None else bpy.data.scenes:
        kiln = getattr(scene, "kiln", None)
        if kiln is None:
            continue
        for item in kiln.jobs:
            if is_running(item.local_id):
                continue
            if not item.job_id and item.state == "submitting":
                # Saved or closed before the server answered: there is no job to follow.
                item.state = "failed"
                item.error = "Blender stopped before the server accepted this job; generate it again"
                continue
            if not item.job_id or item.state not in ACTIVE_STATES:
                continue
            spec = make_spec(item, None, None, settings.resolved_output_dir())
            item.error = ""
            if not ui_is_live():
                run_blocking(context, scene, item, spec)
            else:
                start_thread(context, item, spec)
            count += 1
    return count


@bpy.app.handlers.persistent
def on_load_post(*_args) -> None:
    """A reopened .blend picks up its running jobs (interactive only: never block a file load)."""
    if not ui_is_live():
        return
    try:
        resume_jobs(bpy.context)
    except KilnError as ex:
        print(f"kiln: could not resume jobs: {ex}", file=sys.stderr)


@bpy.app.handlers.persistent
def on_load_pre(*_args) -> None:
    """Another file replaces this one: its entries are no longer ours to put back."""
    _registry.clear()


@bpy.app.handlers.persistent
def on_undo_pre(*_args) -> None:
    """Before an undo or redo: note the entries as they are now (the state to keep)."""
    refresh_tracked()


@bpy.app.handlers.persistent
def on_undo_post(*_args) -> None:
    """After an undo or redo: put back the job entries it dropped or rolled back."""
    if reconcile_tracked().changed:
        _redraw()


HANDLERS = (
    ("load_pre", on_load_pre),
    ("load_post", on_load_post),
    ("undo_pre", on_undo_pre),
    ("undo_post", on_undo_post),
    ("redo_pre", on_undo_pre),
    ("redo_post", on_undo_post),
)
"""(bpy.app.handlers list, function) pairs that register() adds and unregister() removes."""


def shutdown() -> None:
    """Stop following jobs (they keep running on the server) and remove the timer."""
    for thread in _threads.values():
        thread.detach()
    _threads.clear()
    _registry.clear()
    if bpy.app.timers.is_registered(_pump):
        bpy.app.timers.unregister(_pump)
