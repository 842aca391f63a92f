"""End to end: the add-on's batch path against a real server process, checked in the saved .blend.

`test_batch_generates_imports_and_renders` uses the tiny test engine (a textured box) so the
whole path runs today; `test_avatar_from_prompt` is the same with the real avatar engine and
runs once the server offers kind "avatar" and the avatar weights are shipped.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from tests.blender.bpy_harness import TEST_ENGINE, KilnServer, http_json, requires_bpy, run_bpy

pytestmark = requires_bpy

# Opens the saved .blend and measures what the batch left in it.
INSPECT = """
def plain(value):
    # Custom properties as JSON: groups -> dicts, arrays -> lists.
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "to_list"):
        return value.to_list()
    return list(value) if isinstance(value, (list, tuple)) else value

def inspect(blend):
    bpy.ops.wm.open_mainfile(filepath=blend)
    scene = bpy.data.scenes["Scene"]
    coll = bpy.data.collections.get("Kiln")
    objects = []
    for obj in (coll.objects if coll else ()):
        if obj.parent is not None:
            continue
        entry = {"name": obj.name, "type": obj.type,
                 "props": {k: plain(obj[k]) for k in obj.keys() if k.startswith("kiln_")}}
        meshes = [o for o in (obj, *obj.children_recursive) if o.type == "MESH"]
        entry["dims"] = [max(m.dimensions) for m in meshes]
        base = []
        for mesh in meshes:
            for slot in mesh.material_slots:
                bsdf = next((n for n in slot.material.node_tree.nodes if n.type == "BSDF_PRINCIPLED"), None)
                link = bsdf.inputs["Base Color"].links[0] if bsdf and bsdf.inputs["Base Color"].is_linked else None
                node = link.from_node if link else None
                image = node.image if node is not None and node.type == "TEX_IMAGE" else None
                base.append({
                    "node": node.type if node else None,
                    "packed": bool(image and image.packed_file),
                    "size": list(image.size) if image else None,
                    "pixel": [round(v * 255) for v in image.pixels[:3]] if image else None,
                })
        entry["base_color"] = base
        objects.append(entry)
    sed = scene.sequence_editor
    strips = [] if sed is None else list(sed.strips if hasattr(sed, "strips") else sed.sequences)
    jobs = [{"job_id": j.job_id, "state": j.state, "object": j.object_name, "video": j.video_path}
            for j in scene.kiln.jobs] if hasattr(scene, "kiln") else None
    details = [{"seed": j.seed, "attributes_path": j.attributes_path,
                "made_with": [[a.key, a.value, a.source, round(a.confidence, 3), a.used] for a in j.made_with],
                "notes": [[n.kind, n.text] for n in j.notes]}
               for j in scene.kiln.jobs] if hasattr(scene, "kiln") else None
    return {
        "job_details": details,
        "objects": objects,
        "kiln_in_scene": coll is not None and coll.name in scene.collection.children,
        "strips": [{"type": s.type, "frames": s.frame_final_duration, "path": bpy.path.abspath(s.filepath)}
                   for s in strips],
        "turntable_scene": "Kiln Turntable" in bpy.data.scenes,
        "jobs": jobs,
        "user_engine": scene.render.engine,
        "user_resolution": [scene.render.resolution_x, scene.render.resolution_y],
    }
"""


def _batch_script(argv: list[str], register_for_inspect: bool = True) -> str:
    return (
        INSPECT
        + f"""
import os
from blender_addon import cli, register

def main():
    code = cli.main({argv!r})
    out = {argv[argv.index("--out") + 1]!r}
    blend = os.path.join(out, "kiln.blend")
    facts = {{"code": code, "files": sorted(os.listdir(out)) if os.path.isdir(out) else []}}
    if os.path.exists(blend):
        {"register()" if register_for_inspect else "pass"}  # cli.main unregistered; Scene.kiln is needed to read jobs
        facts.update(inspect(blend))
    # Blender still works after whatever happened: make and count a new object.
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.data.objects.new("after", None)
    facts["still_working"] = "after" in bpy.data.objects
    return facts
"""
    )


def _frames(path: Path) -> int:
    import imageio_ffmpeg

    return imageio_ffmpeg.count_frames_and_secs(str(path))[0]


def test_batch_generates_imports_and_renders(kiln_server, tmp_path):
    out = tmp_path / "out"
    argv = ["generate", "--prompt", "a small red box", "--kind", "kiln_test_box", "--seed", "5"]
    argv += ["--out", str(out), "--server", kiln_server.url, "--turntable", "--frames", "6", "--size", "64"]
    argv += ["--samples", "2", "--resolution", "64", "--texture-size", "256"]
    run = run_bpy(_batch_script(argv), tmp_path)
    data = run.data
    assert data["code"] == 0, run.stderr[-3000:]
    assert data["files"] == ["a_small_red_box.glb", "a_small_red_box_turntable.mp4", "kiln.blend"]
    assert (out / "a_small_red_box.glb").read_bytes()[:4] == b"glTF"
    # One root object, named from the prompt, in the Kiln collection linked to the scene.
    assert data["kiln_in_scene"]
    [obj] = data["objects"]
    assert obj["name"] == "a small red box"
    props = obj["props"]
    assert props["kiln_prompt"] == "a small red box" and props["kiln_seed"] == 5
    assert props["kiln_kind"] == "kiln_test_box" and len(props["kiln_job_id"]) == 32
    assert props["kiln_turntable"] == str(out / "a_small_red_box_turntable.mp4")
    # The test box is 0.4 x 0.3 x 0.5 m: its largest dimension survives the glTF round trip.
    assert obj["dims"] == [pytest.approx(0.5, abs=1e-4)]
    # Base colour comes from an image texture packed into the .blend (16 x 16 PNG from the engine).
    [base] = obj["base_color"]
    assert (base["node"], base["packed"], base["size"]) == ("TEX_IMAGE", True, [16, 16])
    # The MP4 has exactly the turntable's frames, and the VSE strip plays all of them.
    assert _frames(out / "a_small_red_box_turntable.mp4") == 6
    assert data["strips"] == [
        {"type": "MOVIE", "frames": 6, "path": str(out / "a_small_red_box_turntable.mp4")}
    ]
    # The job is remembered in the .blend with its server id.
    assert data["jobs"] == [
        {
            "job_id": props["kiln_job_id"],
            "state": "succeeded",
            "object": "a small red box",
            "video": str(out / "a_small_red_box_turntable.mp4"),
        }
    ]
    # The artist's scene keeps its own render settings; the turntable has its own scene.
    assert data["turntable_scene"]
    assert data["user_resolution"] == [1920, 1080]
    assert data["still_working"]


@pytest.mark.slow
def test_avatar_from_prompt(kiln_server, tmp_path):
    if "avatar" not in kiln_server.kinds():
        pytest.skip("the server does not offer kind 'avatar' yet (core/pipelines/avatar.py not installed)")
    from core.avatar.model import WEIGHTS_DIR  # imports torch; only once the engine is there

    weights = Path(os.environ.get("KILN_TEST_AVATAR_WEIGHTS") or WEIGHTS_DIR)
    if not (weights / "model.safetensors").is_file():
        pytest.skip(f"the avatar weights are not in {weights} yet (the avatar job would fail saying so)")
    out = tmp_path / "out"
    argv = [
        "generate",
        "--prompt",
        "a woman with a red bob and round glasses",
        "--seed",
        "3",
        "--out",
        str(out),
    ]
    argv += ["--server", kiln_server.url, "--turntable", "--frames", "8", "--size", "64", "--samples", "2"]
    argv += ["--resolution", "64", "--texture-size", "256", "--poll-interval", "0.5", "--timeout", "30"]
    run = run_bpy(_batch_script(argv), tmp_path, timeout=900)
    data = run.data
    assert data["code"] == 0, run.stderr[-3000:]
    stem = "a_woman_with_a_red_bob_and_round_glasses"
    # The avatar's finished preview comes down too (the panel shows it; a batch keeps it as a thumbnail).
    assert data["files"] == [
        f"{stem}.glb",
        f"{stem}_attributes.json",
        f"{stem}_preview.png",
        f"{stem}_turntable.mp4",
        "kiln.blend",
    ]
    [obj] = data["objects"]
    assert obj["name"] == "a woman with a red bob and round glasses"
    assert obj["props"]["kiln_kind"] == "avatar" and obj["props"]["kiln_seed"] == 3
    # The attributes the model was conditioned on come back from attributes.json onto the object.
    attributes = obj["props"]["kiln_attributes"]
    assert {k: attributes.get(k) for k in ("hair_style", "hair_color", "glasses")} == {
        "hair_style": "bob",
        "hair_color": "red",
        "glasses": "round",
    }
    sources = obj["props"]["kiln_attribute_sources"]
    assert {k: sources[k] for k in ("hair_style", "hair_color", "glasses")} == dict.fromkeys(
        ("hair_style", "hair_color", "glasses"), "prompt"
    )
    # The shipped model draws what the prompt left open for this seed; it says so.
    # (all 14, less the hat colour when no hat was drawn)
    assert len(attributes) >= 13 and "eye_color" in attributes and set(sources.values()) == {"prompt", "seed"}
    # A head-sized asset (Z-up metres): between 10 cm and 3 m across.
    assert all(0.1 < d < 3.0 for d in obj["dims"])
    assert obj["base_color"] and all(b["node"] == "TEX_IMAGE" and b["packed"] for b in obj["base_color"])
    assert _frames(out / f"{stem}_turntable.mp4") == 8
    assert [s["frames"] for s in data["strips"]] == [8]


def test_server_down_fails_cleanly(tmp_path):
    from tests.blender.bpy_harness import free_port

    out = tmp_path / "out"
    url = f"http://127.0.0.1:{free_port()}"
    run = run_bpy(
        _batch_script(["generate", "--prompt", "a box", "--out", str(out), "--server", url]), tmp_path
    )
    assert run.data["code"] == 1
    assert f"cannot reach the Kiln server at {url}" in run.stderr
    # Nothing written, nothing half-imported, and bpy goes on working.
    assert run.data["files"] == []
    assert "objects" not in run.data
    assert run.data["still_working"]


def test_bad_arguments_exit_2_with_a_message(tmp_path):
    run = run_bpy(_batch_script(["generate", "--out", str(tmp_path / "o")]), tmp_path)
    assert run.data["code"] == 2
    assert "nothing to generate: give --prompt, --prompts-file or --photo" in run.stderr
    run = run_bpy(
        _batch_script(["generate", "--prompt", "x", "--attribute", "hair", "--out", str(tmp_path / "o")]),
        tmp_path,
    )
    assert run.data["code"] == 2
    assert "--attribute 'hair' must look like NAME=VALUE" in run.stderr
    not_a_folder = tmp_path / "taken"
    not_a_folder.write_text("a file where the output folder should go")
    run = run_bpy(_batch_script(["generate", "--prompt", "x", "--out", str(not_a_folder)]), tmp_path)
    assert run.data["code"] == 2
    assert f"kiln: error: cannot use --out {not_a_folder} as the output folder" in run.stderr
    assert "Traceback" not in run.stderr


def test_server_killed_mid_job(tmp_path):
    server = KilnServer(tmp_path / "server_data", env={"KILN_TEST_SLOW_S": "60"}).start()
    out = tmp_path / "out"
    argv = ["generate", "--prompt", "a box __slow__", "--kind", "kiln_test_box", "--out", str(out)]
    argv += ["--server", server.url, "--poll-interval", "0.2", "--timeout", "3"]
    killed_at: list[float] = []

    def kill_when_running() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                jobs = http_json(server.url + "/v1/jobs?state=running")["jobs"]
            except OSError:
                jobs = []
            if jobs and jobs[0]["progress"] > 0:
                server.kill()
                killed_at.append(time.monotonic())
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_when_running, daemon=True)
    killer.start()
    try:
        run = run_bpy(_batch_script(argv), tmp_path, timeout=240)
    finally:
        killer.join(5)
        server.stop()
    assert killed_at, "the job never started running"
    assert run.data["code"] == 1
    assert "cannot reach the Kiln server" in run.stderr
    assert run.data["files"] == []  # no GLB, no .blend: nothing half-made
    assert run.data["still_working"]


def test_prompts_file_runs_each_prompt_and_reports_failures(kiln_server, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# a comment\na blue box\n\nbroken __fail__\na blue box\n")
    out = tmp_path / "out"
    argv = ["generate", "--prompts-file", str(prompts), "--kind", "kiln_test_box", "--out", str(out)]
    argv += ["--server", kiln_server.url, "--poll-interval", "0.1"]
    run = run_bpy(_batch_script(argv), tmp_path)
    data = run.data
    # Two boxes made (the repeated prompt gets its own file), one failure reported, exit status 1.
    assert data["code"] == 1
    assert data["files"] == ["a_blue_box.glb", "a_blue_box_.glb", "kiln.blend"]
    assert sorted(o["name"] for o in data["objects"]) == ["a blue box", "a blue box.001"]
    assert "broken __fail__: the job failed: the test engine was asked to fail" in run.stderr
    states = sorted(j["state"] for j in data["jobs"])
    assert states == ["failed", "succeeded", "succeeded"]
    assert data["strips"] == []  # no --turntable, no video


def test_photo_upload_reaches_the_engine(tmp_path):
    # The server's photo route feeds kind photo_avatar; here it runs the test engine, which paints
    # the box with the photo's mean colour, so the colour proves the uploaded bytes arrived intact.
    from PIL import Image

    photo = tmp_path / "face.png"
    Image.new("RGB", (32, 32), (200, 40, 90)).save(photo)
    engines = (TEST_ENGINE, "photo_avatar=tests.blender.kiln_test_engine:run_job")
    server = KilnServer(tmp_path / "server_data", engines=engines).start()
    out = tmp_path / "out"
    try:
        argv = ["generate", "--photo", str(photo), "--out", str(out), "--server", server.url, "--seed", "1"]
        run = run_bpy(_batch_script(argv), tmp_path)
    finally:
        server.stop()
    data = run.data
    assert data["code"] == 0, run.stderr[-3000:]
    # The test engine writes attributes.json for photos, as the photo_avatar pipeline does.
    assert data["files"] == ["kiln.blend", "photo_face.glb", "photo_face_attributes.json"]
    [obj] = data["objects"]
    assert obj["name"] == "photo face" and obj["props"]["kiln_kind"] == "photo_avatar"
    # Bottom-left texel (an unstriped row) is exactly the photo's colour.
    assert obj["base_color"][0]["pixel"] == [200, 40, 90]


def test_photo_with_prompt_words_attributes_and_an_odd_file_name(tmp_path):
    # --photo takes --prompt (what to change) and --attr overrides, as the photo_avatar job does;
    # the file name has a quote, a line break and non-ASCII letters, which the upload encodes;
    # attributes.json comes back and is kept on the object, and the seed the server picked shows.
    from PIL import Image

    photo = tmp_path / 'my "face"\n é.png'
    Image.new("RGB", (32, 32), (200, 40, 90)).save(photo)
    engines = (TEST_ENGINE, "photo_avatar=tests.blender.kiln_test_engine:run_job")
    server = KilnServer(tmp_path / "server_data", engines=engines).start()
    out = tmp_path / "out"
    try:
        argv = ["generate", "--photo", str(photo), "--prompt", "with a red cap and a zorble"]
        argv += ["--attr", "beard=stubble", "--out", str(out), "--server", server.url]
        run = run_bpy(_batch_script(argv), tmp_path)
        [job] = http_json(server.url + "/v1/jobs")["jobs"]
    finally:
        server.stop()
    data = run.data
    assert data["code"] == 0, run.stderr[-3000:]
    # The server got the prompt words, the override and the file name as sent (RFC 7578).
    params = job["params"]
    assert params["prompt"] == "with a red cap and a zorble"
    assert params["attributes"] == {"beard": "stubble"}
    assert params["photo"]["filename"] == "my %22face%22%0A é.png"
    seed = params["seed"]  # none was given: the server picked it
    assert f"seed {seed})" in run.stdout
    # In the vocabulary's order, each with where it came from.
    [made] = [line for line in run.stdout.splitlines() if line.startswith("kiln:   made with")]
    assert made.index("skin_tone=tan (photo)") < made.index("beard=stubble (request)")
    assert made.index("beard=stubble (request)") < made.index("headwear=cap (prompt)")
    assert "kiln:   unknown word: zorble" in run.stdout
    stem = "photo_my_face_with_a_red_cap_and_a_zorbl"  # ASCII, 40 characters
    assert data["files"] == ["kiln.blend", f"{stem}.glb", f"{stem}_attributes.json"]
    [obj] = data["objects"]
    assert obj["name"] == 'photo my "face" é, with a red cap and a zorble'
    # The photo's colour still arrives intact (the upload was not broken by the name).
    assert obj["base_color"][0]["pixel"] == [200, 40, 90]
    props = obj["props"]
    assert props["kiln_seed"] == seed and props["kiln_kind"] == "photo_avatar"
    assert props["kiln_attributes"] == {
        "skin_tone": "tan",
        "headwear": "cap",
        "headwear_color": "red",
        "beard": "stubble",
    }
    assert props["kiln_attribute_sources"] == {
        "skin_tone": "photo",
        "headwear": "prompt",
        "headwear_color": "prompt",
        "beard": "request",
    }
    assert props["kiln_unknown_words"] == ["zorble"] and props["kiln_conflicts"] == []
    record = json.loads(props["kiln_attributes_json"])
    assert record["photo"]["read"]["glasses"]["confidence"] == 0.3
    # The job entry in the .blend shows the same, with the unsure reading and the photo warning.
    [details] = data["job_details"]
    assert details["seed"] == seed
    assert details["attributes_path"] == str(out / f"{stem}_attributes.json")
    assert details["made_with"] == [
        ["skin_tone", "tan", "photo", 0.9, True],
        ["beard", "stubble", "request", -1.0, True],
        ["headwear", "cap", "prompt", -1.0, True],
        ["headwear_color", "red", "prompt", -1.0, True],
        ["glasses", "round", "photo", 0.3, False],
    ]
    assert details["notes"] == [["unknown_word", "zorble"], ["warning", "the face is small in the photo"]]


def test_photos_times_prompts_and_attr_parse(tmp_path):
    # Each photo is made once per prompt; --attr is --attribute. Checked without a server.
    run = run_bpy(
        """
        import argparse
        from pathlib import Path
        from blender_addon import cli
        from blender_addon.protocol import OutputOptions

        def main():
            args = cli.build_parser().parse_args(
                ["generate", "--photo", "a.png", "--photo", "b.jpg", "--prompt", "bald", "--prompt", "with a cap",
                 "--attr", "beard=full", "--attribute", "glasses=round", "--seed", "4", "--out", "o"])
            sources = cli.job_sources(args, cli.read_prompts(args), [Path(p) for p in args.photo],
                                      cli.parse_attributes(args.attribute), OutputOptions())
            only_prompts = cli.build_parser().parse_args(["generate", "--prompt", "a man", "--out", "o"])
            prompt_sources = cli.job_sources(only_prompts, ["a man"], [], {}, OutputOptions())
            bare = cli.build_parser().parse_args(["generate", "--prompt", "a man", "--no-rig", "--out", "o"])
            text = cli.build_parser().parse_args(["generate", "--kind", "text_to_3d", "--prompt", "a cup",
                                                  "--no-rig", "--out", "o"])
            return {
                "photo_jobs": [[r.kind, r.prompt, r.attributes, r.seed, str(p), label] for r, p, label in sources],
                "prompt_jobs": [[r.kind, r.prompt, r.seed, p, label] for r, p, label in prompt_sources],
                "bodies": [cli.job_sources(a, ["x"], [], {}, OutputOptions())[0][0].to_dict()
                           for a in (only_prompts, bare, text)],
            }
        """,
        tmp_path,
    )
    overrides = {"beard": "full", "glasses": "round"}
    assert run.data["photo_jobs"] == [
        ["photo_avatar", "bald", overrides, 4, "a.png", "photo a, bald"],
        ["photo_avatar", "with a cap", overrides, 4, "a.png", "photo a, with a cap"],
        ["photo_avatar", "bald", overrides, 4, "b.jpg", "photo b, bald"],
        ["photo_avatar", "with a cap", overrides, 4, "b.jpg", "photo b, with a cap"],
    ]
    # Without --photo a prompt is a job of its own, and the seed is left to the server.
    assert run.data["prompt_jobs"] == [["avatar", "a man", None, None, "a man"]]
    # --no-rig asks the server for a bare avatar; rigged is the default and is not sent (older
    # servers accept the body), and text jobs never carry it.
    default, bare, text = run.data["bodies"]
    assert "rig" not in default and bare["rig"] is False and "rig" not in text
