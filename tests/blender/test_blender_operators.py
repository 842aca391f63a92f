"""The installed extension's operators against a real server: background (blocking) and UI (thread + pump).

In the bpy module timers never fire, so the UI path is driven by calling the pump timer function
by hand, exactly as Blender's timer would, and timing each call to show it never waits on HTTP.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.blender.bpy_harness import REPO, KilnServer, free_port, requires_bpy, run_bpy

pytestmark = requires_bpy

sys.path.insert(0, str(REPO / "tools"))
import build_extension  # noqa: E402  (tools/ is not a package)

SLOW_S = 1.5
"""Seconds the test engine spends on a ``__slow__`` prompt before writing its box."""


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory):
    return build_extension.build(tmp_path_factory.mktemp("dist"))


@pytest.fixture
def slow_server(tmp_path):
    server = KilnServer(tmp_path / "server_data", env={"KILN_TEST_SLOW_S": str(SLOW_S)}).start()
    yield server
    server.stop()


PRELUDE = """
import sys, time
from pathlib import Path
MOD = "bl_ext.user_default.kiln"

def install(zip_path, url, out_dir):
    bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    prefs = bpy.context.preferences.addons[MOD].preferences
    prefs.server_url, prefs.output_dir, prefs.poll_interval, prefs.timeout = url, out_dir, 0.1, 5.0
    return prefs, sys.modules[MOD + ".blender_addon.runtime"]

def set_panel(prompt, kind="kiln_test_box"):
    s = bpy.context.scene.kiln
    s.mode, s.prompt, s.custom_kind, s.use_random_seed, s.seed = "AVATAR", prompt, kind, False, 9
    s.resolution, s.texture_size = 64, "256"
    s.turntable_frames, s.turntable_size, s.turntable_samples = 4, 32, 1
    return s

def item_facts(item):
    return {k: getattr(item, k) for k in ("state", "error", "object_name", "seed", "kind", "video_path")} | {
        "has_id": len(item.job_id) == 32, "glb": item.glb_path}

def call(op, *args, **kwargs):
    # A script's operator call turns an ERROR report into RuntimeError (the UI shows it in the status bar).
    try:
        return [sorted(op(*args, **kwargs)), ""]
    except RuntimeError as ex:
        return [["CANCELLED"], str(ex)]

def counts():
    return [len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.materials)]
"""


def test_background_operators(extension_zip, kiln_server, tmp_path):
    out = tmp_path / "outputs"
    dead = f"http://127.0.0.1:{free_port()}"
    run = run_bpy(
        PRELUDE
        + f"""
def main():
    prefs, runtime = install({str(extension_zip)!r}, {kiln_server.url!r}, {str(out)!r})
    facts = {{}}
    facts["check"] = sorted(bpy.ops.kiln.check_server())
    facts["status"] = prefs.status
    s = set_panel("   ")
    facts["empty"] = [call(bpy.ops.kiln.generate, "INVOKE_DEFAULT"), len(s.jobs)]
    # 1. Generate: INVOKE_DEFAULT runs execute() here, which takes the blocking path.
    set_panel("a green box")
    facts["generate"] = sorted(bpy.ops.kiln.generate("INVOKE_DEFAULT"))
    facts["item"] = item_facts(s.jobs[-1])
    obj = bpy.data.objects.get(s.jobs[-1].object_name)
    facts["obj_collection"] = [c.name for c in obj.users_collection] if obj else None
    # 2. Turntable of it, into the VSE; then the video again on an image plane.
    facts["turntable"] = sorted(bpy.ops.kiln.render_turntable(object_name=obj.name))
    facts["item_after_tt"] = item_facts(s.jobs[-1])
    video = s.jobs[-1].video_path
    facts["import_video"] = sorted(bpy.ops.kiln.import_video(filepath=video, image_plane=True))
    sed = bpy.context.scene.sequence_editor
    strips = sed.strips if hasattr(sed, "strips") else sed.sequences
    facts["strips"] = sorted((st.channel, st.frame_final_duration) for st in strips)
    plane = bpy.data.objects.get(video.rsplit("/", 1)[-1].rsplit(".", 1)[0])
    facts["plane_image"] = plane.active_material.node_tree.nodes["Image Texture"].image.source if plane else None
    # "Turntable When Done" in the background too, as the UI's pump does after its import.
    s = set_panel("a red box")
    s.turntable_after_generate = True
    facts["generate_tt"] = sorted(bpy.ops.kiln.generate("INVOKE_DEFAULT"))
    s.turntable_after_generate = False
    facts["item_tt"] = item_facts(s.jobs[-1])
    facts["strips_tt"] = len(strips)
    # 3. Server down: a clear error on the job, nothing imported, Blender goes on.
    prefs.server_url = {dead!r}
    before = counts()
    set_panel("another box")
    facts["down"] = call(bpy.ops.kiln.generate, "INVOKE_DEFAULT")
    facts["down_item"] = item_facts(s.jobs[-1])
    facts["down_counts"] = [before, counts()]
    facts["down_check"] = [call(bpy.ops.kiln.check_server), prefs.status]
    # 4. A remote server while online access is off (the bpy module's default): refused, no request.
    prefs.server_url = "http://10.11.12.13:8765"
    facts["online"] = [bpy.app.online_access, call(bpy.ops.kiln.generate, "INVOKE_DEFAULT")]
    facts["online_item"] = item_facts(s.jobs[-1])
    return facts
""",
        tmp_path,
    )
    d = run.data
    assert d["check"] == ["FINISHED"] and d["status"].startswith("Kiln server 0.1.0 on ")
    # An empty prompt is refused before a job entry exists, with a message (no traceback).
    assert d["empty"] == [[["CANCELLED"], "Error: Kiln: the prompt is empty; describe what to generate\n"], 0]
    assert "Traceback" not in run.stdout + run.stderr
    assert d["generate"] == ["FINISHED"]
    item = d["item"]
    assert (
        item["state"],
        item["error"],
        item["object_name"],
        item["seed"],
        item["kind"],
        item["has_id"],
    ) == (
        "succeeded",
        "",
        "a green box",
        9,
        "kiln_test_box",
        True,
    )
    # Downloads go to the output folder set in the preferences, one folder per job.
    glb = Path(item["glb"])
    assert glb.parent.parent == out and glb.name == "a_green_box.glb" and glb.read_bytes()[:4] == b"glTF"
    assert d["obj_collection"] == ["Kiln"]
    assert d["turntable"] == ["FINISHED"]
    assert d["item_after_tt"]["video_path"] == str(out / "a_green_box_turntable.mp4")
    assert d["import_video"] == ["FINISHED"]
    assert d["strips"] == [[1, 4], [2, 4]]  # (channel, frames): the turntable, then the re-import
    assert d["plane_image"] == "MOVIE"
    assert d["generate_tt"] == ["FINISHED"] and d["item_tt"]["object_name"] == "a red box"
    assert d["item_tt"]["video_path"] == str(out / "a_red_box_turntable.mp4")
    assert d["strips_tt"] == 3
    assert d["down"][0] == ["CANCELLED"] and f"cannot reach the Kiln server at {dead}" in d["down"][1]
    assert d["down_item"]["state"] == "failed"
    assert d["down_item"]["error"].startswith(f"cannot reach the Kiln server at {dead}")
    assert d["down_counts"][0] == d["down_counts"][1]
    (check_result, check_message), status = d["down_check"]
    assert check_result == ["CANCELLED"] and status.startswith(
        f"Not connected: cannot reach the Kiln server at {dead}"
    )
    assert check_message == f"Error: {status}\n"
    assert d["online"][0] is False and d["online"][1][0] == ["CANCELLED"]
    assert "Blender's online access is off" in d["online_item"]["error"]


def test_ui_path_never_waits_and_cancel_and_resume(extension_zip, slow_server, tmp_path):
    run = run_bpy(
        PRELUDE
        + f"""
def pump_until(runtime, item, done, limit=60.0):
    durations, progress = [], []
    start = time.monotonic()
    while not done(item):
        if time.monotonic() - start > limit:
            raise RuntimeError("job did not finish: " + str(item_facts(item)))
        t = time.perf_counter()
        runtime._pump()
        if item.state in ("submitting", "queued", "running"):  # not the call that imported the result
            durations.append(time.perf_counter() - t)
        progress.append(item.progress)
        time.sleep(0.05)
    return durations, progress

def main():
    prefs, runtime = install({str(extension_zip)!r}, {slow_server.url!r}, {str(tmp_path / "outputs")!r})
    ctx = bpy.context
    s = set_panel("a slow box __slow__")
    facts = {{}}
    # 1. The UI path: a worker thread does the HTTP; the pump (a timer in the UI) applies updates.
    request = s.to_request()
    item = runtime.new_job_item(ctx.scene, request)
    runtime.start_thread(ctx, item, runtime.make_spec(item, request, None, Path(prefs.output_dir)))
    t0 = time.monotonic()
    durations, progress = pump_until(runtime, item, lambda i: i.object_name != "" or i.error != "")
    facts["ui"] = {{"elapsed": time.monotonic() - t0, "max_pump": max(durations), "pumps": len(durations),
                   "mid_progress": sorted({{round(p, 2) for p in progress if 0.0 < p < 1.0}}),
                   "item": item_facts(item), "in_kiln": item.object_name in bpy.data.collections["Kiln"].objects}}
    # 2. Cancel from the UI: the server confirms, nothing is imported.
    before = len(bpy.data.objects)
    item = runtime.new_job_item(ctx.scene, request)
    runtime.start_thread(ctx, item, runtime.make_spec(item, request, None, Path(prefs.output_dir)))
    pump_until(runtime, item, lambda i: i.state == "running" and i.progress > 0)
    facts["cancel_op"] = sorted(bpy.ops.kiln.cancel(index=len(s.jobs) - 1))
    pump_until(runtime, item, lambda i: i.state in ("cancelled", "failed", "succeeded") and not runtime.is_running(i.local_id))
    facts["cancel"] = {{"item": item_facts(item), "objects_added": len(bpy.data.objects) - before}}
    # 3. Saved with a running job, reopened, resumed: the job id survives in the .blend.
    from importlib import import_module
    client = import_module(MOD + ".blender_addon.client").KilnClient(prefs.server_url)
    job = client.create_job(request)
    item = runtime.new_job_item(ctx.scene, request)
    item.job_id, item.state = job.id, job.state
    blend = {str(tmp_path / "saved.blend")!r}
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=blend)
    s = bpy.context.scene.kiln
    facts["reopened"] = [(j.job_id == job.id, j.state) for j in s.jobs]
    facts["resume"] = sorted(bpy.ops.kiln.resume_jobs())
    facts["resumed_item"] = item_facts(s.jobs[-1])
    facts["resumed_obj"] = s.jobs[-1].object_name in bpy.data.objects
    return facts
""",
        tmp_path,
    )
    d = run.data
    ui = d["ui"]
    assert ui["item"]["state"] == "succeeded" and ui["item"]["object_name"] == "a slow box __slow__"
    assert ui["in_kiln"]
    # The job takes >= 1.5 s, yet every pump call while it runs returns at once: it only drains a
    # queue (the HTTP waits are on the worker). The call that imports the GLB took ~0.1 s here.
    assert ui["elapsed"] >= SLOW_S
    assert ui["pumps"] >= 10
    assert ui["max_pump"] < 0.05, ui
    # Progress reached the main thread while the job ran (the engine reports 0 .. 0.9 while waiting).
    assert len(ui["mid_progress"]) >= 2
    assert d["cancel_op"] == ["FINISHED"]
    assert d["cancel"]["item"]["state"] == "cancelled" and d["cancel"]["item"]["error"] == "cancelled"
    assert d["cancel"]["objects_added"] == 0
    # Three entries survive the save: done, cancelled, and the running one with its server id.
    assert d["reopened"][:2] == [[False, "succeeded"], [False, "cancelled"]]
    assert d["reopened"][2][0] is True and d["reopened"][2][1] in ("queued", "running")
    assert d["resume"] == ["FINISHED"]
    assert d["resumed_item"]["state"] == "succeeded" and d["resumed_obj"]


def test_interactive_operators_return_at_once(extension_zip, slow_server, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    run = run_bpy(
        PRELUDE
        + f"""
def pump_until(runtime, item_of, done, limit=60.0):
    start = time.monotonic()
    while not done(item_of()):
        if time.monotonic() - start > limit:
            raise RuntimeError("timed out: " + str(item_facts(item_of())))
        runtime._pump()
        time.sleep(0.05)

def main():
    prefs, runtime = install({str(extension_zip)!r}, {slow_server.url!r}, {str(tmp_path / "outputs")!r})
    runtime.ui_is_live = lambda: True  # as in the UI; this script calls the pump in place of the timer
    facts = {{}}
    s = set_panel("a slow box __slow__")
    # 1. Generate returns before the server has even answered; the pump brings the result in.
    t = time.perf_counter()
    facts["generate"] = call(bpy.ops.kiln.generate, "INVOKE_DEFAULT")
    facts["generate_s"] = time.perf_counter() - t
    facts["state_after_call"] = s.jobs[-1].state
    pump_until(runtime, lambda: bpy.context.scene.kiln.jobs[-1], lambda i: i.object_name or i.error)
    facts["done"] = item_facts(s.jobs[-1])
    # 2. Server down: the operator still returns at once; the entry turns failed on the pump.
    prefs.server_url = {dead!r}
    t = time.perf_counter()
    facts["down"] = call(bpy.ops.kiln.generate, "INVOKE_DEFAULT")
    facts["down_s"] = time.perf_counter() - t
    pump_until(runtime, lambda: bpy.context.scene.kiln.jobs[-1], lambda i: i.error)
    facts["down_item"] = item_facts(s.jobs[-1])
    # 3. A file saved with a running job follows it again by itself when reopened (load_post).
    prefs.server_url = {slow_server.url!r}
    from importlib import import_module
    job = import_module(MOD + ".blender_addon.client").KilnClient(prefs.server_url).create_job(s.to_request())
    item = runtime.new_job_item(bpy.context.scene, s.to_request())
    item.job_id, item.state = job.id, job.state
    blend = {str(tmp_path / "running.blend")!r}
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    bpy.ops.wm.read_homefile(use_empty=True)
    runtime._threads.clear()
    bpy.ops.wm.open_mainfile(filepath=blend)
    facts["followed_after_open"] = len(runtime._threads)
    pump_until(runtime, lambda: bpy.context.scene.kiln.jobs[-1], lambda i: i.object_name or i.error)
    facts["reopened_item"] = item_facts(bpy.context.scene.kiln.jobs[-1])
    facts["same_job"] = bpy.context.scene.kiln.jobs[-1].job_id == job.id
    return facts
""",
        tmp_path,
    )
    d = run.data
    assert d["generate"] == [["FINISHED"], ""]
    # The call only starts a thread; the job itself takes >= 1.5 s (measured 33 ms; 5 ms with the server down).
    assert d["generate_s"] < 0.5
    assert d["state_after_call"] == "submitting"
    assert d["done"]["state"] == "succeeded" and d["done"]["object_name"] == "a slow box __slow__"
    assert d["down"] == [["FINISHED"], ""] and d["down_s"] < 0.5
    assert d["down_item"]["state"] == "failed"
    assert d["down_item"]["error"].startswith(f"cannot reach the Kiln server at {dead}")
    assert d["followed_after_open"] == 1
    assert d["same_job"] and d["reopened_item"]["state"] == "succeeded"
    assert d["reopened_item"]["object_name"] == "a slow box __slow__.001"  # the first one is in the file


def test_generate_twice_gives_two_seeds_and_use_seed_makes_the_first_again(
    extension_zip, kiln_server, tmp_path
):
    # Default panel settings: Random Seed is on, so pressing Generate twice gives two different
    # results; the seed the server picked shows on each job, and Use Seed repeats one exactly.
    run = run_bpy(
        PRELUDE
        + f"""
def texel(item):
    obj = bpy.data.objects[item.object_name]
    image = obj.active_material.node_tree.nodes["Image Texture"].image
    return [round(v * 255) for v in image.pixels[:3]]

def main():
    prefs, runtime = install({str(extension_zip)!r}, {kiln_server.url!r}, {str(tmp_path / "outputs")!r})
    s = bpy.context.scene.kiln
    s.prompt, s.custom_kind, s.resolution, s.texture_size = "a box", "kiln_test_box", 64, "256"
    runs = []
    for _ in range(2):
        runs.append(sorted(bpy.ops.kiln.generate("INVOKE_DEFAULT")))
    first, second = s.jobs[0], s.jobs[1]
    facts = {{"runs": runs, "random": s.use_random_seed,
              "seeds": [first.seed, second.seed], "props": [bpy.data.objects[j.object_name]["kiln_seed"] for j in s.jobs[:2]],
              "texels": [texel(first), texel(second)]}}
    facts["use_seed"] = sorted(bpy.ops.kiln.use_seed(index=0))
    facts["third"] = sorted(bpy.ops.kiln.generate("INVOKE_DEFAULT"))
    facts["third_seed"], facts["third_texel"] = s.jobs[2].seed, texel(s.jobs[2])
    return facts
""",
        tmp_path,
    )
    d = run.data
    assert d["runs"] == [["FINISHED"], ["FINISHED"]] and d["random"] is True
    first, second = d["seeds"]
    assert first >= 0 and second >= 0 and first != second
    assert d["props"] == d["seeds"]
    # The test engine colours its box from the seed: two seeds, two colours.
    assert d["texels"][0] != d["texels"][1]
    assert d["use_seed"] == ["FINISHED"] and d["third"] == ["FINISHED"]
    assert d["third_seed"] == first and d["third_texel"] == d["texels"][0]
