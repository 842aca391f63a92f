"""A rigged avatar GLB in Blender: armature with the rig's bones, vertex groups, shape keys that
move the mesh where they should, the unrigged import, and a turntable with an expression cycle."""

from __future__ import annotations

import imageio_ffmpeg
import pytest

from core.assets.pipeline import AssetOptions, build_asset
from core.assets.rig import BONES, SHAPE_KEYS
from core.avatar.landmarks import estimate_landmarks
from core.avatar.procedural.engine import AvatarField
from core.avatar.vocab.attributes import AvatarAttributes
from tests.assets.test_assets_gltf import read_glb
from tests.assets.test_assets_rig import _skin_data
from tests.blender.bpy_harness import requires_bpy, run_bpy

pytestmark = requires_bpy


@pytest.fixture(scope="module")
def avatar_glb(tmp_path_factory):
    field = AvatarField(AvatarAttributes(hair_style="short"), seed=5)
    field.lipschitz = 2.0
    out = tmp_path_factory.mktemp("avatar")
    options = AssetOptions(resolution=96, texture_size=128, turntable_frames=0, rig=True)
    result = build_asset(field, out, options, name="avatar", landmarks=lambda v: estimate_landmarks(field, v))
    d = _skin_data(*read_glb(result.glb))
    lm = field.landmarks()
    offset = d["joint_world"]["neck"] - lm["neck_base"]  # Blender's space is Kiln's, grounded
    points = {k: (lm[k] + offset).tolist() for k in ("chin", "eye_l", "eye_r")}
    return result.glb, points


def test_import_gives_an_armature_vertex_groups_and_shape_keys_that_move_the_mesh(avatar_glb, tmp_path):
    glb, points = avatar_glb
    run = run_bpy(
        f"""
        import math
        from pathlib import Path
        import numpy as np
        from mathutils import Vector
        from blender_addon import importer

        P = {points!r}

        def evaluated(obj):
            dg = bpy.context.evaluated_depsgraph_get()
            dg.update()
            ev = obj.evaluated_get(dg)
            m = ev.to_mesh()
            co = np.empty(len(m.vertices) * 3)
            m.vertices.foreach_get("co", co)
            ev.to_mesh_clear()
            mw = np.array(obj.matrix_world)
            return co.reshape(-1, 3) @ mw[:3, :3].T + mw[:3, 3]

        def main():
            root = importer.import_glb(bpy.context, Path({str(glb)!r}), "a rigged avatar", location=(0, 0, 0))
            mesh = importer.expression_mesh(root)
            rest = evaluated(mesh)
            near = lambda key, r: np.linalg.norm(rest - np.array(P[key]), axis=1) < r
            chin, eye_r = near("chin", 0.012), near("eye_r", 0.03)
            top = rest[:, 2] > rest[:, 2].max() - 0.01  # the crown
            jaw = root.pose.bones["jaw"]
            jaw.rotation_mode = "XYZ"
            jaw.rotation_euler = (math.radians(20), 0, 0)
            posed = evaluated(mesh)
            jaw.rotation_euler = (0, 0, 0)
            mesh.data.shape_keys.key_blocks["jaw_open"].value = 1.0
            opened = evaluated(mesh)
            mesh.data.shape_keys.key_blocks["jaw_open"].value = 0.0
            mesh.data.shape_keys.key_blocks["blink_L"].value = 1.0
            blinked = evaluated(mesh)
            moved = lambda a, sel: np.linalg.norm(a - rest, axis=1)[sel]
            from blender_addon import panels, register, unregister
            register()
            drawn = []

            class Layout:
                use_property_split = use_property_decorate = False
                def column(self, **kw):
                    return self
                def prop(self, data, name, text="", **kw):
                    assert name in data.bl_rna.properties, name
                    drawn.append(text)
                def label(self, text="", **kw):
                    drawn.append(text)

            class Self:
                layout = Layout()

            bpy.context.view_layer.objects.active = root
            panel = panels.VIEW3D_PT_kiln_expressions.poll(bpy.context)
            panels.VIEW3D_PT_kiln_expressions.draw(Self(), bpy.context)
            unregister()
            plain = importer.import_glb(bpy.context, Path({str(glb)!r}), "plain", rig=False)
            return {{
                "root": [root.name, root.type], "bones": [b.name for b in root.data.bones],
                "parents": {{b.name: b.parent.name if b.parent else None for b in root.data.bones}},
                "mesh_parent": mesh.parent.name, "modifiers": [m.type for m in mesh.modifiers],
                "groups": [g.name for g in mesh.vertex_groups],
                "keys": [k.name for k in mesh.data.shape_keys.key_blocks],
                "counts": [int(chin.sum()), int(top.sum()), int(eye_r.sum())],
                "posed_chin": float(moved(posed, chin).min()), "posed_top": float(moved(posed, top).max()),
                "open_chin": float(moved(opened, chin).min()), "open_top": float(moved(opened, top).max()),
                "blink_right": float(moved(blinked, eye_r).max()), "blink_all": float(np.linalg.norm(blinked - rest, axis=1).max()),
                "panel": panel, "drawn": drawn,
                "plain": [plain.name, plain.type, len(plain.vertex_groups), plain.data.shape_keys is None],
                "armatures": sorted(o.name for o in bpy.data.objects if o.type == "ARMATURE"),
            }}
        """,
        tmp_path,
    )
    d = run.data
    assert d["root"] == ["a rigged avatar", "ARMATURE"]
    assert d["bones"] == list(BONES)
    assert d["parents"] == {
        "root": None,
        "neck": "root",
        "head": "neck",
        "jaw": "head",
        "eye_L": "head",
        "eye_R": "head",
    }
    assert d["mesh_parent"] == "a rigged avatar" and d["modifiers"] == ["ARMATURE"]
    assert d["groups"] == list(BONES)
    assert d["keys"] == ["Basis", *SHAPE_KEYS]
    assert min(d["counts"]) >= 1, d["counts"]
    # Posing the jaw bone 20 degrees and the jaw_open key both drop the chin, never the crown.
    assert d["posed_chin"] > 0.01 and d["posed_top"] < 1e-5, d
    assert d["open_chin"] > 0.01 and d["open_top"] < 1e-5, d
    # blink_L closes the left eye only.
    assert d["blink_all"] > 0.004 and d["blink_right"] < 1e-6, d
    assert d["panel"] is True
    assert d["drawn"][:5] == ["Jaw Open", "Smile", "Blink L", "Blink R", "Brow Raise"]
    # An unrigged import is the bare mesh: no armature, groups or shape keys.
    assert d["plain"] == ["plain", "MESH", 0, True]
    assert d["armatures"] == ["a rigged avatar"]


def test_turntable_with_an_expression_cycle_renders_every_frame(avatar_glb, tmp_path):
    glb, _ = avatar_glb
    out = tmp_path / "tt.mp4"
    run = run_bpy(
        f"""
        from pathlib import Path
        from blender_addon import importer, turntable as tt

        def main():
            root = importer.import_glb(bpy.context, Path({str(glb)!r}), "avatar")
            opts = tt.TurntableOptions(frames=6, size=32, samples=1, expressions=True)
            tt.render_turntable(root, Path({str(out)!r}), opts)
            keys = importer.expression_mesh(root).data.shape_keys
            curves = {{c.data_path.split('"')[1]: [round(c.evaluate(f), 3) for f in range(1, 7)]
                      for c in tt.action_fcurves(keys)}}
            action = keys.animation_data.action.name
            # A second turntable replaces the cycle; a plain one removes it.
            tt.build_turntable_scene(root, tt.TurntableOptions(frames=4))
            left = keys.animation_data.action
            return {{"curves": curves, "action": action, "left": None if left is None else left.name}}
        """,
        tmp_path,
    )
    d = run.data
    assert imageio_ffmpeg.count_frames_and_secs(str(out))[0] == 6
    assert d["action"] == "Kiln Turntable Expressions" and d["left"] is None
    assert set(d["curves"]) == {"blink_L", "blink_R", "smile", "jaw_open"}
    for name, values in d["curves"].items():  # each rises from 0 and comes back within the turn
        assert values[0] == 0.0 and max(values) > 0.3, (name, values)
