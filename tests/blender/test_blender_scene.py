"""Turntable and import in bpy without a server: the loop, the framing, the scene left alone, clean failure."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.blender.bpy_harness import requires_bpy, run_bpy

pytestmark = requires_bpy


def test_turntable_loops_seamlessly_and_leaves_the_user_scene_alone(tmp_path):
    run = run_bpy(
        f"""
        import math
        from blender_addon import turntable as tt

        def main():
            scene = bpy.context.scene
            user = (scene.render.engine, scene.render.resolution_x, scene.camera.name, scene.frame_end)
            bpy.ops.mesh.primitive_cube_add(size=1.0, location=(1.0, 0.0, 0.5))
            obj = bpy.context.active_object
            opts = tt.TurntableOptions(frames=6, size=32, samples=1)
            video = tt.render_turntable(obj, {str(tmp_path / "tt.mp4")!r}, opts)
            ts = bpy.data.scenes[tt.TURNTABLE_SCENE]
            pivot = ts.objects[tt.RIG_PREFIX + "Pivot"]
            [fcurve] = tt.action_fcurves(pivot)
            keys = [(k.co[0], k.co[1], k.interpolation) for k in fcurve.keyframe_points]
            rot = [fcurve.evaluate(f) for f in range(1, 8)]
            cam = ts.objects[tt.RIG_PREFIX + "Camera"]
            ts.frame_set(1)
            bpy.context.view_layer.update()
            centre, radius = tt.world_bounds(obj)
            # Stills at frame 1 and frame N+1 (one past the end) must be the same picture.
            # (Rendered as one-frame animations: a still render of a non-active scene ignores frame_set.)
            if hasattr(ts.render.image_settings, "media_type"):
                ts.render.image_settings.media_type = "IMAGE"  # Blender 5.0
            ts.render.image_settings.file_format = "PNG"
            ts.render.filepath = {str(tmp_path)!r} + "/still_"
            for frame in (1, 7, 2):
                ts.frame_start = ts.frame_end = frame
                bpy.ops.render.render(animation=True, scene=ts.name)
            ts.frame_start, ts.frame_end = 1, opts.frames
            strip = tt.add_video_strip(scene, video)
            probe = bpy.data.scenes.new("probe")
            tt.configure_render(probe, tt.TurntableOptions(engine="EEVEE", samples=3), 6)
            eevee = [probe.render.engine, probe.eevee.taa_render_samples, list(bpy.app.version[:2])]
            bpy.ops.mesh.primitive_uv_sphere_add(radius=0.5, location=(0.0, 0.0, 2.0))
            sphere_centre, sphere_radius = tt.world_bounds(bpy.context.active_object)
            return {{
                "keys": keys, "rot": rot, "extrapolation": fcurve.extrapolation,
                "centre": list(centre), "radius": radius, "pivot": list(pivot.location),
                "cam_local": list(cam.location), "cam_parent": cam.parent.name,
                "engine": ts.render.engine, "size": [ts.render.resolution_x, ts.render.resolution_y],
                "frames": [ts.frame_start, ts.frame_end], "codec": ts.render.ffmpeg.codec,
                "user_after": [scene.render.engine, scene.render.resolution_x, scene.camera.name, scene.frame_end],
                "user_before": list(user), "strip": [strip.type, strip.frame_final_duration, strip.channel],
                "obj_in_user_scene": obj.name in scene.objects, "obj_in_tt_scene": obj.name in ts.objects,
                "sphere": [list(sphere_centre), sphere_radius], "eevee": eevee,
            }}
        """,
        tmp_path,
    )
    d = run.data
    # Keys at frame 1 (0) and frame N+1 (2 pi), linear, so each of the N frames turns 2 pi / N.
    assert d["keys"] == [[1.0, 0.0, "LINEAR"], [7.0, pytest.approx(2 * math.pi), "LINEAR"]]
    assert d["rot"] == pytest.approx([k * math.pi / 3 for k in range(7)], abs=1e-5)
    assert d["extrapolation"] == "LINEAR"
    # A unit cube at (1, 0, 0.5): the rig turns about its centre; bounding radius = sqrt(3) / 2.
    assert d["pivot"] == pytest.approx([1.0, 0.0, 0.5]) and d["centre"] == pytest.approx([1.0, 0.0, 0.5])
    assert d["radius"] == pytest.approx(math.sqrt(3) / 2, abs=1e-5)
    # A sphere's radius is its own (0.5), not its box's half-diagonal (0.87): it fills the frame.
    assert d["sphere"][0] == pytest.approx([0.0, 0.0, 2.0], abs=1e-5)
    assert d["sphere"][1] == pytest.approx(0.5, abs=1e-5)
    # Camera distance = radius * margin / sin(half fov); 50 mm lens on a 36 mm sensor, 15 degrees up.
    half_fov = math.atan(36 / (2 * 50))
    distance = math.sqrt(3) / 2 * 1.15 / math.sin(half_fov)
    elevation = math.radians(15)
    expected_cam = [0.0, -distance * math.cos(elevation), distance * math.sin(elevation)]
    assert d["cam_local"] == pytest.approx(expected_cam, abs=1e-4)
    assert d["cam_parent"] == "Kiln Turntable Pivot"
    assert (d["engine"], d["size"], d["frames"], d["codec"]) == ("CYCLES", [32, 32], [1, 6], "H264")
    # The user's scene is untouched: same engine, resolution, camera, range; the object stays in it.
    assert d["user_after"] == d["user_before"]
    assert d["obj_in_user_scene"] and d["obj_in_tt_scene"]
    assert d["strip"] == ["MOVIE", 6, 1]
    # EEVEE on request: its engine id changed in 4.2 (EEVEE Next) and back in 5.0.
    engine, samples, version = d["eevee"]
    assert engine == ("BLENDER_EEVEE" if version >= [5, 0] else "BLENDER_EEVEE_NEXT") and samples == 3
    # Seamless: frame N+1 renders the same picture as frame 1; frame 2 (a 60 degree turn) differs.
    from PIL import Image

    s1, s5, s2 = (np.asarray(Image.open(tmp_path / f"still_{f:04d}.png"), np.float32) for f in (1, 7, 2))
    # Measured (0..255 scale): frame 1 vs N+1 = 0.0 (same fixed render seed); frame 1 vs 2 = 7.9.
    assert np.abs(s1 - s5).mean() < 0.5
    assert np.abs(s1 - s2).mean() > 2.0
    import imageio_ffmpeg

    assert imageio_ffmpeg.count_frames_and_secs(str(tmp_path / "tt.mp4"))[0] == 6


def test_import_places_names_packs_and_keeps_provenance(tmp_path):
    run = run_bpy(
        f"""
        from pathlib import Path
        from tests.blender.kiln_test_engine import write_glb
        from blender_addon import importer

        def main():
            glb = Path({str(tmp_path / "box.glb")!r})
            write_glb(glb, seed=4)
            bpy.context.scene.cursor.location = (1.0, 2.0, 3.0)
            obj = importer.import_glb(bpy.context, glb, "  a   tall box ", {{"seed": 4, "job_id": "f" * 32}})
            images = importer.material_images(obj)
            other = bpy.data.scenes.new("Other")
            elsewhere = importer.import_glb(bpy.context, glb, "elsewhere", scene=other)
            placement = {{
                "in_other": elsewhere.name in other.objects, "in_current": elsewhere.name in bpy.context.scene.objects,
                "active_still": bpy.context.view_layer.objects.active.name,
            }}
            return {{"placement": placement,
                "name": obj.name, "location": list(obj.location), "collections": [c.name for c in obj.users_collection],
                "props": {{k: obj[k] for k in obj.keys()}}, "active": bpy.context.view_layer.objects.active.name,
                "selected": [o.name for o in bpy.context.selected_objects],
                "packed": [bool(i.packed_file) for i in images], "dims": list(obj.dimensions),
            }}
        """,
        tmp_path,
    )
    d = run.data
    assert d["name"] == "a tall box"
    assert d["location"] == pytest.approx([1.0, 2.0, 3.0])
    assert d["collections"] == ["Kiln"]
    assert d["props"] == {"kiln_prompt": "  a   tall box ", "kiln_seed": 4, "kiln_job_id": "f" * 32}
    assert d["active"] == "a tall box" and d["selected"] == ["a tall box"]
    assert d["packed"] == [True]
    # A job started in another scene lands there; the current scene and its selection stay as they were.
    assert d["placement"] == {"in_other": True, "in_current": False, "active_still": "a tall box"}
    # The engine's box is 0.4 x 0.3 x 0.5 m in Z-up metres; glTF's Y-up is converted back on import.
    assert d["dims"] == pytest.approx([0.4, 0.3, 0.5], abs=1e-5)


def test_a_broken_glb_leaves_nothing_behind(tmp_path):
    run = run_bpy(
        f"""
        from pathlib import Path
        from blender_addon import importer

        def counts():
            return [len(getattr(bpy.data, a)) for a in ("objects", "meshes", "materials", "images", "collections")]

        def main():
            broken = Path({str(tmp_path / "broken.glb")!r})
            broken.write_bytes(b"glTF" + b"\\x02\\x00\\x00\\x00" + b"\\xff" * 64)
            not_glb = Path({str(tmp_path / "page.glb")!r})
            not_glb.write_bytes(b"<html>")
            before = counts()
            errors = []
            for path in (broken, not_glb):
                try:
                    importer.import_glb(bpy.context, path, "x")
                except Exception as ex:
                    errors.append(type(ex).__name__ + ": " + str(ex))
            import addon_utils
            addon_utils.disable("io_scene_gltf2")
            try:
                importer.import_glb(bpy.context, broken, "x")
            except RuntimeError as ex:
                errors.append(str(ex))
            return {{"before": before, "after": counts(), "errors": errors}}
        """,
        tmp_path,
    )
    d = run.data
    assert d["after"] == d["before"]
    assert len(d["errors"]) == 3
    assert (
        d["errors"][2] == "Blender's glTF importer is off; enable the add-on 'glTF 2.0 format' in Preferences"
    )
    assert d["errors"][
        1
    ] == f"ValueError: {tmp_path / 'page.glb'} is not a GLB file (starts with b'<htm'); " + (
        "the download may be damaged"
    )


def test_a_glb_with_several_roots_gets_one_parent_at_the_cursor(tmp_path):
    run = run_bpy(
        f"""
        import numpy as np
        import trimesh
        from blender_addon import importer

        def main():
            scene = trimesh.Scene()
            scene.add_geometry(trimesh.creation.box((0.2, 0.2, 0.2)), node_name="left",
                               transform=trimesh.transformations.translation_matrix((-0.5, 0, 0)))
            scene.add_geometry(trimesh.creation.box((0.2, 0.2, 0.2)), node_name="right",
                               transform=trimesh.transformations.translation_matrix((0.5, 0, 0)))
            path = {str(tmp_path / "two.glb")!r}
            with open(path, "wb") as fh:
                fh.write(scene.export(file_type="glb"))
            bpy.context.scene.cursor.location = (0.0, 3.0, 0.0)
            root = importer.import_glb(bpy.context, path, "two boxes")
            bpy.context.view_layer.update()
            kids = sorted(root.children_recursive, key=lambda o: o.matrix_world.translation.x)
            return {{
                "root": [root.name, root.type, list(root.location)],
                "children": [[o.type, [round(v, 4) for v in o.matrix_world.translation]] for o in kids
                             if o.type == "MESH"],
                "all_in_kiln": all(c.name == "Kiln" for o in (root, *kids) for c in o.users_collection),
            }}
        """,
        tmp_path,
    )
    d = run.data
    assert d["root"][0] == "two boxes" and d["root"][1] == "EMPTY"
    assert d["root"][2] == pytest.approx([0.0, 3.0, 0.0])
    # The boxes keep their offsets (+-0.5 along X) around the cursor.
    assert d["children"] == [["MESH", [-0.5, 3.0, 0.0]], ["MESH", [0.5, 3.0, 0.0]]]
    assert d["all_in_kiln"]


def test_interactive_turntable_finishes_from_its_timer(tmp_path):
    # In the UI the render runs as a job; its completion handler only sets a flag and a timer
    # brings the video in. Here INVOKE_DEFAULT renders inline, and the script calls the timer.
    run = run_bpy(
        f"""
        from blender_addon import register, runtime, operators

        def main():
            register()
            runtime.ui_is_live = lambda: True
            bpy.ops.mesh.primitive_cube_add(size=1.0)
            obj = bpy.context.active_object
            s = bpy.context.scene.kiln
            s.turntable_frames, s.turntable_size, s.turntable_samples = 3, 32, 1
            out = {str(tmp_path / "cube.mp4")!r}
            result = sorted(bpy.ops.kiln.render_turntable("INVOKE_DEFAULT", object_name=obj.name, filepath=out))
            pending = dict(operators._pending_render)
            again = operators._finish_interactive_render()
            sed = bpy.context.scene.sequence_editor
            strips = [] if sed is None else [(st.type, st.frame_final_duration) for st in
                                             (sed.strips if hasattr(sed, "strips") else sed.sequences)]
            handlers_left = operators._render_done in bpy.app.handlers.render_complete
            from blender_addon import unregister
            unregister()
            return {{"result": result, "flags": [pending.get("done"), pending.get("cancelled")],
                     "again": again, "strips": strips, "handlers_left": handlers_left, "prop": obj.get("kiln_turntable")}}
        """,
        tmp_path,
    )
    d = run.data
    assert d["result"] == ["FINISHED"]
    assert d["flags"] == [True, None]  # render_complete fired, render_cancel did not
    assert d["again"] is None  # the timer finished and unregisters itself
    assert d["strips"] == [["MOVIE", 3]]
    assert d["handlers_left"] is False
    assert d["prop"] == str(tmp_path / "cube.mp4")


def test_pump_keeps_the_final_update_of_a_worker_that_ends_during_the_drain(tmp_path):
    # The race: the pump drains a worker's queue, then the worker puts its final update and
    # ends before the pump looks at it again. That final update must still reach the job item
    # on a later pump; it must not be drained and dropped while the thread is removed.
    run = run_bpy(
        """
        from blender_addon import register, unregister, runtime
        from blender_addon.jobflow import JobUpdate
        from blender_addon.protocol import Job

        class RacyThread:
            # Alive until its first drain; during that drain it queues its final update and ends.
            def __init__(self, final):
                self.queue, self.final, self.alive, self.drains = [], final, True, 0
            def drain(self):
                out, self.queue = self.queue, []
                self.drains += 1
                if self.drains == 1:
                    self.queue.append(self.final)
                    self.alive = False
                return out
            def detach(self):
                pass

        def main():
            register()
            scene = bpy.context.scene
            item = runtime.new_job_item(scene, None, "racy")
            item.auto_import = False
            job = Job.from_dict({"id": "j1", "kind": "avatar", "state": "failed", "stage": "",
                                 "progress": 1.0, "message": "", "error": "engine crashed"})
            thread = RacyThread(JobUpdate(job=job, error="the job failed: engine crashed", done=True))
            runtime._threads[item.local_id] = thread
            states = []
            for _ in range(3):
                runtime._pump()
                states.append((item.state, item.error, item.local_id in runtime._threads))
            unregister()
            return {"states": states}
        """,
        tmp_path,
    )
    states = run.data["states"]
    # Pump 1 drains nothing (the worker was still alive when asked) and keeps following it;
    # pump 2 applies the final update and lets the dead thread go.
    assert states[0] == ["submitting", "", True]
    assert states[1] == ["failed", "the job failed: engine crashed", False]
    assert states[2] == states[1]


def test_import_video_of_a_file_that_is_not_a_video_is_a_message(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video")
    run = run_bpy(
        f"""
        from blender_addon import register, unregister

        def main():
            register()
            try:
                bpy.ops.kiln.import_video(filepath={str(fake)!r})
                outcome = "finished"
            except RuntimeError as ex:  # an ERROR report from a script's operator call
                outcome = str(ex)
            sed = bpy.context.scene.sequence_editor
            strips = 0 if sed is None else len(sed.strips if hasattr(sed, "strips") else sed.sequences)
            unregister()
            return {{"outcome": outcome, "strips": strips}}
        """,
        tmp_path,
    )
    d = run.data
    assert d["outcome"].startswith("Error: Kiln: cannot import notes.mp4 as a video"), d
    assert d["strips"] == 0
    assert "Traceback" not in run.stderr


def test_interactive_check_connection_refuses_a_remote_server_without_touching_bpy_off_thread(tmp_path):
    # Online access is off in the bpy module: the refusal comes from the main thread, and the
    # worker thread only formats it (it never reads bpy). The timer that shows it is called by hand.
    run = run_bpy(
        """
        import threading, time
        from blender_addon import register, unregister, runtime, operators

        def main():
            register()
            runtime.ui_is_live = lambda: True
            # Loaded from the repo (not installed) the add-on has no preferences: stand in for them.
            from blender_addon.preferences import ClientSettings
            made_on = []

            class Recording(ClientSettings):
                def client(self, online_access=None):  # reads bpy.app.online_access
                    made_on.append(threading.current_thread() is threading.main_thread())
                    return super().client(online_access)

            operators.client_settings = lambda context=None: Recording("http://192.0.2.1:8765")
            statuses = []
            operators._set_status = lambda context, text: statuses.append(text)
            shown = []
            registered = []
            real_register = bpy.app.timers.register
            bpy.app.timers.register = lambda fn, **kw: registered.append(fn)
            operators.runtime.notify = lambda text, level="ERROR": shown.append((level, text))
            try:
                result = sorted(bpy.ops.kiln.check_server())
                status_now = list(statuses)
                deadline = time.monotonic() + 5
                while registered[0]() is not None:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            finally:
                bpy.app.timers.register = real_register
            out = {"result": result, "status_now": status_now, "status": statuses[-1], "shown": shown,
                   "made_on_main_thread": made_on}
            unregister()
            return out
        """,
        tmp_path,
    )
    d = run.data
    assert d["result"] == ["FINISHED"] and d["status_now"] == ["Checking…"]
    assert d["status"].startswith("Not connected: Blender's online access is off")
    assert d["shown"] == [["ERROR", d["status"]]]
    assert d["made_on_main_thread"] == [True]


def test_a_cancelled_interactive_turntable_leaves_no_partial_movie(tmp_path):
    # Esc during the render: Blender has written part of the movie under a hidden name that the
    # artist would never find; the timer deletes it and reports the cancel.
    out = tmp_path / "cube.mp4"
    run = run_bpy(
        f"""
        from pathlib import Path
        from blender_addon import register, unregister, runtime, operators, turntable

        def main():
            register()
            bpy.ops.mesh.primitive_cube_add(size=1.0)
            obj = bpy.context.active_object
            tt_scene = turntable.build_turntable_scene(obj, turntable.TurntableOptions(frames=4, size=32))
            out = Path({str(out)!r})
            partial = turntable.written_movie(out, tt_scene)
            partial.write_bytes(b"half a movie")
            shown = []
            runtime.notify = lambda text, level="ERROR": shown.append((level, text))
            operators._pending_render.update(target_scene=bpy.context.scene.name, out_path=str(out),
                                             object_name=obj.name, image_plane=False, cancelled=True)
            again = operators._finish_interactive_render()
            left = sorted(p.name for p in out.parent.iterdir() if p.suffix == ".mp4")
            unregister()
            return {{"partial": partial.name, "left": left, "again": again, "shown": shown,
                     "pending": dict(operators._pending_render)}}
        """,
        tmp_path,
    )
    d = run.data
    assert d["partial"] == ".cube_0001-0004.mp4"
    assert d["left"] == []
    assert d["again"] is None and d["pending"] == {}
    assert d["shown"] == [["WARNING", "Kiln: turntable render cancelled"]]


def test_turntable_when_done_starts_from_the_pump(tmp_path):
    # The pump (a timer: no window in its context) starts the interactive turntable after an
    # import; here INVOKE_DEFAULT renders inline and the finishing timer is called by hand.
    run = run_bpy(
        f"""
        from pathlib import Path
        from blender_addon import register, unregister, runtime, operators, preferences

        def main():
            register()
            runtime.ui_is_live = lambda: True
            operators.client_settings = lambda context=None: preferences.ClientSettings(
                output_dir={str(tmp_path / "out")!r})
            shown = []
            runtime.notify = lambda text, level="ERROR": shown.append((level, text))
            bpy.ops.mesh.primitive_cube_add(size=1.0)
            obj = bpy.context.active_object
            obj.name = "Red Cube"
            s = bpy.context.scene.kiln
            s.turntable_frames, s.turntable_size, s.turntable_samples = 3, 32, 1
            runtime._start_turntable_after(obj)
            again = operators._finish_interactive_render()
            sed = bpy.context.scene.sequence_editor
            strips = [] if sed is None else [(st.type, st.frame_final_duration) for st in
                                             (sed.strips if hasattr(sed, "strips") else sed.sequences)]
            windows = len(bpy.context.window_manager.windows)
            unregister()
            return {{"again": again, "strips": strips, "prop": obj.get("kiln_turntable"), "shown": shown,
                     "windows": windows}}
        """,
        tmp_path,
    )
    d = run.data
    assert d["again"] is None and d["strips"] == [["MOVIE", 3]]
    assert d["prop"] == str(tmp_path / "out" / "red_cube_turntable.mp4")
    assert d["shown"] == [["INFO", f"Kiln: turntable saved to {d['prop']}"]]


def test_undo_cannot_drop_or_roll_back_a_job_entry(tmp_path):
    # Blender's undo puts bpy data back to the last undo step; entries written since (Generate
    # pushes no step, nor does the timer) vanish or go back to an older state. Undo cannot run
    # in the bpy module, so each test step does to Scene.kiln.jobs what an undo would, then
    # calls the handlers Blender calls around an undo (and the timer), which must repair it.
    run = run_bpy(
        """
        from blender_addon import register, unregister, runtime
        from blender_addon.protocol import AttributeReport, JobRequest

        class Thread:  # a worker that is still following its job
            alive, detached = True, False
            def drain(self):
                return []
            def detach(self):
                self.detached = True

        def facts(item):
            return [item.job_id, item.state, item.glb_path, item.object_name,
                    [[a.key, a.value, a.source] for a in item.made_with], [n.text for n in item.notes]]

        def main():
            register()
            out = {"handlers": [runtime.on_undo_post in bpy.app.handlers.undo_post,
                                runtime.on_undo_pre in bpy.app.handlers.redo_pre]}
            scene = bpy.context.scene
            jobs = scene.kiln.jobs
            # 1. Submitted from the UI: the entry exists only since Generate (no undo step).
            item = runtime.new_job_item(scene, JobRequest("avatar", "a man"), "a man")
            local_id = item.local_id
            item.job_id, item.state = "J1", "running"
            runtime.on_undo_pre()
            jobs.remove(0)  # the undo
            runtime.on_undo_post()
            out["restored"] = [len(jobs), jobs[0].local_id == local_id, facts(jobs[0])]
            # 2. Finished and imported by the timer, then an undo to a step where it was still running
            #    and the object did not exist: the entry keeps its result; the missing object's name goes.
            item = jobs[0]
            item.state, item.glb_path, item.object_name = "succeeded", "/out/a_man.glb", "a man"
            report = AttributeReport.from_dict({"attributes": {"beard": "full"}, "sources": {"beard": "prompt"},
                                                "unknown_words": ["zorble"]})
            runtime.write_report(item, report)
            runtime.on_undo_pre()
            item.state, item.glb_path, item.object_name = "running", "", ""
            item.made_with.clear()
            item.notes.clear()
            runtime.on_undo_post()
            out["rolled_forward"] = facts(jobs[0])
            # 3. The timer alone (no handler ran): a running job's entry that vanished comes back,
            #    and its worker is still followed.
            runtime._threads[local_id] = thread = Thread()
            jobs.remove(0)
            runtime._pump()
            out["pump"] = [len(jobs), jobs[0].local_id == local_id, thread.detached, local_id in runtime._threads]
            runtime._threads.clear()
            # 4. Remove Job is the artist's choice: an undo/redo afterwards leaves it removed.
            runtime.on_undo_pre()
            out["remove_op"] = sorted(bpy.ops.kiln.job_remove(index=0))
            runtime.on_undo_post()
            out["after_remove"] = [len(jobs), local_id in runtime._registry]
            # 5. Another file: its scene is not ours to put entries back into.
            runtime.new_job_item(scene, JobRequest("avatar", "a woman"))
            out["before_load"] = len(runtime._registry)
            bpy.ops.wm.read_homefile(use_empty=True)
            out["after_load"] = [len(runtime._registry), len(bpy.context.scene.kiln.jobs)]
            unregister()
            out["handlers_after"] = runtime.on_undo_post in bpy.app.handlers.undo_post
            return out
        """,
        tmp_path,
    )
    d = run.data
    assert d["handlers"] == [True, True] and d["handlers_after"] is False
    assert d["restored"] == [1, True, ["J1", "running", "", "", [], []]]
    # The object "a man" was removed by the same undo, so Import Result brings it in again.
    assert d["rolled_forward"] == [
        "J1",
        "succeeded",
        "/out/a_man.glb",
        "",
        [["beard", "full", "prompt"]],
        ["zorble"],
    ]
    assert d["pump"] == [1, True, False, True]
    assert d["remove_op"] == ["FINISHED"] and d["after_remove"] == [0, False]
    assert d["before_load"] == 1 and d["after_load"] == [0, 0]


def test_the_seed_is_random_by_default_and_use_seed_makes_one_again(tmp_path):
    run = run_bpy(
        """
        from blender_addon import register, unregister, runtime

        def main():
            register()
            s = bpy.context.scene.kiln
            s.prompt = "a man"
            fresh = [s.use_random_seed, s.to_request().seed, "seed" in s.to_request().to_dict()]
            # The server picked 123456 for a finished job: Use Seed makes the next job repeat it.
            item = runtime.new_job_item(bpy.context.scene, s.to_request(), "a man")
            unknown = [item.seed, sorted(bpy.ops.kiln.use_seed(index=0)), s.use_random_seed]
            item.seed, item.state = 123456, "succeeded"
            used = sorted(bpy.ops.kiln.use_seed(index=0))
            again = [s.use_random_seed, s.seed, s.to_request().seed]
            unregister()
            return {"fresh": fresh, "unknown": unknown, "used": used, "again": again}
        """,
        tmp_path,
    )
    d = run.data
    # Generate twice with the defaults: no seed is sent, so the server picks a new one each time.
    assert d["fresh"] == [True, None, False]
    # Not known until the server answers: Use Seed leaves the panel as it was.
    assert d["unknown"] == [-1, ["CANCELLED"], True]
    assert d["used"] == ["FINISHED"] and d["again"] == [False, 123456, 123456]


def test_variation_is_the_models_until_the_artist_sets_it(tmp_path):
    run = run_bpy(
        """
        from blender_addon import register, unregister

        def main():
            register()
            s = bpy.context.scene.kiln
            s.prompt = "a man"
            default = "variation" in s.to_request().to_dict()
            s.use_variation, s.variation = True, 0.2
            avatar = s.to_request().to_dict().get("variation")
            s.mode = "OBJECT"
            text = "variation" in s.to_request().to_dict()
            unregister()
            return {"default": default, "avatar": avatar, "text": text}
        """,
        tmp_path,
    )
    d = run.data
    assert d["default"] is False and d["text"] is False
    assert abs(d["avatar"] - 0.2) < 1e-6
