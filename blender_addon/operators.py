"""Operators: generate, cancel, import result, render turntable, import video, check server.

Each has a blocking path for background Blender (timers never fire there, and INVOKE_DEFAULT
runs execute()) and a non-blocking one for the UI (worker thread or render job + timer).
"""

from __future__ import annotations

import threading
from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from . import localserver, runtime, turntable
from .client import KilnError
from .importer import kiln_collection
from .jobflow import file_stem_from_text
from .preferences import ADDON_ID, client_settings


def _job_at(context, index: int):
    jobs = context.scene.kiln.jobs
    if index < 0:
        index = context.scene.kiln.active_job_index
    return jobs[index] if 0 <= index < len(jobs) else None


def turntable_options(settings) -> turntable.TurntableOptions:
    return turntable.TurntableOptions(
        frames=settings.turntable_frames,
        size=settings.turntable_size,
        samples=settings.turntable_samples,
        engine=settings.turntable_engine,
        expressions=settings.turntable_expressions,
    )


class KILN_OT_generate(bpy.types.Operator):
    """Generate an object or avatar with the Kiln server and import it when done"""

    bl_idname = "kiln.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER"}

    def execute(self, context):
        settings = context.scene.kiln
        # 0. Use Local Server is on but it is not running: say so, and the panel offers Start.
        if localserver.should_offer_start(context):
            self.report({"ERROR"}, "Kiln: " + localserver.connection_hint("connection refused", context))
            return {"CANCELLED"}
        # 1. Panel settings -> request; bad input is a message, not a traceback.
        try:
            request = settings.to_request()
        except ValueError as ex:
            self.report({"ERROR"}, f"Kiln: {ex}")
            return {"CANCELLED"}
        photo = None
        if settings.mode == "PHOTO":
            photo = Path(bpy.path.abspath(settings.photo_path)) if settings.photo_path else None
            if photo is None or not photo.is_file():
                self.report({"ERROR"}, "Kiln: pick a photo (PNG/JPEG/WebP) first")
                return {"CANCELLED"}
        # 2. A job entry, saved with the .blend.
        prefs = client_settings(context)
        # A photo job is named after its photo; its prompt only holds changes ("with a red cap").
        label = (
            f"photo {photo.stem}" + (f", {request.prompt}" if request.prompt else "")
            if photo
            else request.prompt
        )
        item = runtime.new_job_item(context.scene, request, label)
        item.auto_import = settings.auto_import
        item.turntable = settings.turntable_after_generate
        spec = runtime.make_spec(item, request, photo, prefs.resolved_output_dir())
        # 3. Run it: inline in background Blender, on a worker thread in the UI.
        error = runtime.run_or_start(context, item, spec)
        if error:
            self.report({"ERROR"}, f"Kiln: {error}")
            return {"CANCELLED"}
        if not runtime.ui_is_live():
            # As the UI's pump does after an import: "Turntable When Done".
            obj = bpy.data.objects.get(item.object_name) if item.object_name else None
            if item.turntable and obj is not None:
                try:
                    render_turntable_blocking(context, obj, default_turntable_path(context, obj))
                except (RuntimeError, OSError) as ex:
                    self.report({"ERROR"}, f"Kiln: imported {obj.name}, but the turntable failed: {ex}")
                    return {"CANCELLED"}
            return {"FINISHED"}
        self.report({"INFO"}, f"Kiln: submitted {label[:40]!r}")
        return {"FINISHED"}


class KILN_OT_cancel(bpy.types.Operator):
    """Cancel the job on the server"""

    bl_idname = "kiln.cancel"
    bl_label = "Cancel Job"
    bl_options = {"INTERNAL"}

    index: IntProperty(default=-1, options={"SKIP_SAVE"})

    def execute(self, context):
        item = _job_at(context, self.index)
        if item is None or not item.active:
            self.report({"WARNING"}, "Kiln: no running job to cancel")
            return {"CANCELLED"}
        if runtime.cancel(item):
            return {"FINISHED"}
        if not item.job_id:
            item.state = "cancelled"
            return {"FINISHED"}
        # Not followed here (e.g. an old file): ask the server directly with a short request.
        try:
            job = client_settings(context).client().cancel_job(item.job_id)
        except KilnError as ex:
            self.report({"ERROR"}, f"Kiln: {ex}")
            return {"CANCELLED"}
        item.state = job.state
        return {"FINISHED"}


class KILN_OT_job_remove(bpy.types.Operator):
    """Remove the job from this list (it is not deleted on the server)"""

    bl_idname = "kiln.job_remove"
    bl_label = "Remove Job"
    bl_options = {"INTERNAL", "UNDO"}

    index: IntProperty(default=-1, options={"SKIP_SAVE"})

    def execute(self, context):
        settings = context.scene.kiln
        index = self.index if self.index >= 0 else settings.active_job_index
        if not 0 <= index < len(settings.jobs):
            return {"CANCELLED"}
        runtime.forget(settings.jobs[index])
        settings.jobs.remove(index)
        settings.active_job_index = min(settings.active_job_index, len(settings.jobs) - 1)
        return {"FINISHED"}


class KILN_OT_use_seed(bpy.types.Operator):
    """Generate with this job's seed next time (Random Seed off), to make the same result again"""

    bl_idname = "kiln.use_seed"
    bl_label = "Use Seed"
    bl_options = {"INTERNAL", "UNDO"}

    index: IntProperty(default=-1, options={"SKIP_SAVE"})

    def execute(self, context):
        item = _job_at(context, self.index)
        if item is None or item.seed < 0:
            self.report({"WARNING"}, "Kiln: the server has not said this job's seed yet")
            return {"CANCELLED"}
        settings = context.scene.kiln
        settings.seed, settings.use_random_seed = item.seed, False
        self.report({"INFO"}, f"Kiln: seed {item.seed} set; Random Seed is off")
        return {"FINISHED"}


class KILN_OT_resume_jobs(bpy.types.Operator):
    """Follow again the jobs that were running when this file was saved or the server went away"""

    bl_idname = "kiln.resume_jobs"
    bl_label = "Resume Jobs"

    def execute(self, context):
        try:
            count = runtime.resume_jobs(context, [context.scene])
        except KilnError as ex:
            self.report({"ERROR"}, f"Kiln: {ex}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Kiln: following {count} job(s)")
        return {"FINISHED"}


class KILN_OT_import_result(bpy.types.Operator):
    """Import the job's GLB into the Kiln collection at the 3D cursor"""

    bl_idname = "kiln.import_result"
    bl_label = "Import Result"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(default=-1, options={"SKIP_SAVE"})

    def execute(self, context):
        item = _job_at(context, self.index)
        if item is None:
            self.report({"ERROR"}, "Kiln: no job selected")
            return {"CANCELLED"}
        try:
            obj = runtime.import_job_result(context, context.scene, item)
        except KilnError as ex:
            self.report({"ERROR"}, f"Kiln: {ex}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Kiln: imported {obj.name}")
        return {"FINISHED"}


# Interactive renders finish later; the render handlers only flag, a timer finishes on the main thread.
_pending_render: dict[str, object] = {}


def _render_done(*_args) -> None:
    _pending_render["done"] = True


def _render_cancelled(*_args) -> None:
    _pending_render["cancelled"] = True


def _remove_render_handlers() -> None:
    for handlers, fn in (
        (bpy.app.handlers.render_complete, _render_done),
        (bpy.app.handlers.render_cancel, _render_cancelled),
    ):
        if fn in handlers:
            handlers.remove(fn)


def _finish_interactive_render() -> float | None:
    if not (_pending_render.get("done") or _pending_render.get("cancelled")):
        return 0.5
    _remove_render_handlers()
    state = dict(_pending_render)
    _pending_render.clear()
    tt_scene = bpy.data.scenes.get(turntable.TURNTABLE_SCENE)
    if state.get("cancelled"):
        turntable.discard_movie(Path(state["out_path"]), tt_scene)
        runtime.notify("Kiln: turntable render cancelled", "WARNING")
        return None
    scene = bpy.data.scenes.get(state["target_scene"])
    try:
        path = turntable.collect_movie(Path(state["out_path"]), tt_scene)
        finish_turntable(
            bpy.context, scene, path, state["object_name"], state["image_plane"], tt_scene.frame_end
        )
    except (RuntimeError, OSError, AttributeError) as ex:
        runtime.notify(f"Kiln: {ex}")
        return None
    runtime.notify(f"Kiln: turntable saved to {path}", "INFO")
    return None


def finish_turntable(context, scene, path: Path, object_name: str, image_plane: bool, frames: int):
    """Bring the rendered video into ``scene``'s VSE (and onto a plane on request)."""
    strip = turntable.add_video_strip(scene, path, name=f"{object_name} turntable")
    obj = bpy.data.objects.get(object_name)
    if obj is not None:
        obj["kiln_turntable"] = str(path)
    for item in scene.kiln.jobs:
        if item.object_name == object_name:
            item.video_path = str(path)
    if image_plane and obj is not None:
        centre, radius = turntable.world_bounds(obj)
        location = centre.copy()
        location.x += radius * 2.2
        turntable.add_image_plane(
            kiln_collection(scene), path, frames, f"{object_name} turntable", location, size=2 * radius
        )
    return strip


def default_turntable_path(context, obj) -> Path:
    """``<output folder>/<object>_turntable.mp4``."""
    return client_settings(context).resolved_output_dir() / f"{file_stem_from_text(obj.name)}_turntable.mp4"


def render_turntable_blocking(context, obj, out_path: Path) -> Path:
    """Render ``obj``'s turntable with the panel's settings and bring it into the VSE (background)."""
    settings = context.scene.kiln
    options = turntable_options(settings)
    path = turntable.render_turntable(obj, out_path, options)
    finish_turntable(context, context.scene, path, obj.name, settings.image_plane, options.frames)
    return path


class KILN_OT_render_turntable(bpy.types.Operator):
    """Render a turntable video of the active object and bring it into the Video Sequencer"""

    bl_idname = "kiln.render_turntable"
    bl_label = "Render Turntable"
    bl_options = {"REGISTER"}

    object_name: StringProperty(name="Object", description="Object to turn (default: the active one)")
    filepath: StringProperty(
        name="Video", subtype="FILE_PATH", description="Output .mp4 (default: output folder)"
    )

    def execute(self, context):
        obj = bpy.data.objects.get(self.object_name) if self.object_name else context.active_object
        if obj is None:
            self.report({"ERROR"}, "Kiln: select the object to turn first")
            return {"CANCELLED"}
        settings = context.scene.kiln
        options = turntable_options(settings)
        if self.filepath:
            out_path = Path(bpy.path.abspath(self.filepath))
        else:
            out_path = default_turntable_path(context, obj)
        target = context.scene
        if not runtime.ui_is_live():
            try:
                path = render_turntable_blocking(context, obj, out_path)
            except (RuntimeError, OSError) as ex:
                self.report({"ERROR"}, f"Kiln: {ex}")
                return {"CANCELLED"}
            self.report({"INFO"}, f"Kiln: turntable saved to {path}")
            return {"FINISHED"}
        if _pending_render:
            self.report({"WARNING"}, "Kiln: a turntable is already rendering")
            return {"CANCELLED"}
        # Interactive: Blender's own render job (with its window and progress), finished by a timer.
        try:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            tt_scene = turntable.build_turntable_scene(obj, options)
        except (RuntimeError, OSError) as ex:
            self.report({"ERROR"}, f"Kiln: the turntable could not be set up: {ex}")
            return {"CANCELLED"}
        tt_scene.render.filepath = turntable.movie_output_prefix(out_path)
        _pending_render.update(
            target_scene=target.name,
            out_path=str(out_path),
            object_name=obj.name,
            image_plane=settings.image_plane,
        )
        bpy.app.handlers.render_complete.append(_render_done)
        bpy.app.handlers.render_cancel.append(_render_cancelled)
        try:
            bpy.ops.render.render("INVOKE_DEFAULT", animation=True, scene=tt_scene.name)
        except RuntimeError as ex:
            _remove_render_handlers()
            _pending_render.clear()
            self.report({"ERROR"}, f"Kiln: the turntable render did not start: {ex}")
            return {"CANCELLED"}
        bpy.app.timers.register(_finish_interactive_render, first_interval=0.5)
        return {"FINISHED"}


class KILN_OT_import_video(bpy.types.Operator):
    """Bring a video into the Video Sequencer (and onto an image plane on request)"""

    bl_idname = "kiln.import_video"
    bl_label = "Import Video"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(subtype="FILE_PATH")
    filter_glob: StringProperty(default="*.mp4;*.mkv;*.mov;*.webm", options={"HIDDEN"})
    image_plane: BoolProperty(name="Image Plane", default=False)
    frames: IntProperty(
        name="Frames", default=0, min=0, description="Frames of the plane's video (0: the strip's)"
    )

    def invoke(self, context, event):
        if self.filepath:
            return self.execute(context)
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        path = Path(bpy.path.abspath(self.filepath))
        if not path.is_file():
            self.report({"ERROR"}, f"Kiln: {path} does not exist")
            return {"CANCELLED"}
        try:
            strip = turntable.add_video_strip(context.scene, path)
            if self.image_plane:
                frames = self.frames or strip.frame_final_duration
                location = context.scene.cursor.location.copy()
                turntable.add_image_plane(kiln_collection(context.scene), path, frames, path.stem, location)
        except (RuntimeError, OSError) as ex:  # not a video Blender can read: a message, not a traceback
            self.report({"ERROR"}, f"Kiln: cannot import {path.name} as a video: {ex}")
            return {"CANCELLED"}
        return {"FINISHED"}


class KILN_OT_check_server(bpy.types.Operator):
    """Ask the Kiln server for its version and device"""

    bl_idname = "kiln.check_server"
    bl_label = "Check Connection"

    def execute(self, context):
        settings = client_settings(context)
        # The client is made here, on the main thread: it reads bpy.app.online_access, and the
        # worker thread below must not touch bpy.
        try:
            client = settings.client()
        except KilnError as ex:
            client, refused = None, f"Not connected: {ex}"

        def ask() -> tuple[bool, str]:
            if client is None:
                return False, refused
            try:
                info = client.info()
            except KilnError as ex:
                return False, f"Not connected: {ex}"
            warning = f" ({info.device_warning})" if info.device_warning else ""
            return (
                True,
                f"Kiln server {info.version} on {info.device}{warning}, {info.queue_length} job(s) queued",
            )

        if not runtime.ui_is_live():
            ok, text = ask()
            _set_status(context, text)
            self.report({"INFO"} if ok else {"ERROR"}, text)
            return {"FINISHED"} if ok else {"CANCELLED"}
        # Interactive: a thread asks, a timer shows the answer; a dead server never freezes the UI.
        _set_status(context, "Checking…")
        answer: list[tuple[bool, str]] = []

        def ask_on_thread() -> None:
            try:
                answer.append(ask())
            except Exception as ex:  # without an answer the timer below would poll forever
                answer.append((False, f"Not connected: {type(ex).__name__}: {ex}"))

        threading.Thread(target=ask_on_thread, daemon=True).start()

        def show() -> float | None:
            if not answer:
                return 0.2
            ok, text = answer[0]
            _set_status(bpy.context, text)
            runtime.notify(text, "INFO" if ok else "ERROR")
            return None

        bpy.app.timers.register(show, first_interval=0.2)
        return {"FINISHED"}


def _set_status(context, text: str) -> None:
    """Show the answer under the button in the preferences."""
    addon = context.preferences.addons.get(ADDON_ID)
    if addon is not None and addon.preferences is not None:
        addon.preferences.status = text


class KILN_OT_attribute_add(bpy.types.Operator):
    """Add an avatar attribute override"""

    bl_idname = "kiln.attribute_add"
    bl_label = "Add Attribute"
    bl_options = {"INTERNAL", "UNDO"}

    def execute(self, context):
        context.scene.kiln.attributes.add()
        return {"FINISHED"}


class KILN_OT_attribute_remove(bpy.types.Operator):
    """Remove this avatar attribute override"""

    bl_idname = "kiln.attribute_remove"
    bl_label = "Remove Attribute"
    bl_options = {"INTERNAL", "UNDO"}

    index: IntProperty(default=0)

    def execute(self, context):
        attributes = context.scene.kiln.attributes
        if 0 <= self.index < len(attributes):
            attributes.remove(self.index)
        return {"FINISHED"}


class KILN_OT_report(bpy.types.Operator):
    """Show a Kiln message in the status bar (used by timers, which cannot report themselves)"""

    bl_idname = "kiln.report"
    bl_label = "Kiln Message"
    bl_options = {"INTERNAL"}

    message: StringProperty()
    level: EnumProperty(items=[(k, k, "") for k in ("INFO", "WARNING", "ERROR")], default="INFO")

    def execute(self, context):
        self.report({self.level}, self.message)
        return {"FINISHED"}


classes = (
    KILN_OT_generate,
    KILN_OT_cancel,
    KILN_OT_job_remove,
    KILN_OT_use_seed,
    KILN_OT_resume_jobs,
    KILN_OT_import_result,
    KILN_OT_render_turntable,
    KILN_OT_import_video,
    KILN_OT_check_server,
    KILN_OT_attribute_add,
    KILN_OT_attribute_remove,
    KILN_OT_report,
)


def unregister_runtime() -> None:
    _remove_render_handlers()
    _pending_render.clear()
    for fn in (_finish_interactive_render,):
        if bpy.app.timers.is_registered(fn):
            bpy.app.timers.unregister(fn)
