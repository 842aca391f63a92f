"""Build the extension zip with Blender's builder, install it into a fresh Blender, enable, cycle it."""

from __future__ import annotations

import sys
import zipfile

import pytest

from tests.blender.bpy_harness import REPO, requires_bpy, run_bpy

pytestmark = requires_bpy

sys.path.insert(0, str(REPO / "tools"))
import build_extension  # noqa: E402  (tools/ is not a package)


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory):
    return build_extension.build(tmp_path_factory.mktemp("dist"))


def test_zip_holds_only_the_addon(extension_zip):
    assert extension_zip.name == "kiln-0.1.0.zip"
    names = zipfile.ZipFile(extension_zip).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"blender_manifest.toml", "__init__.py", "blender_addon"}
    expected = {p.relative_to(REPO).as_posix() for p in (REPO / "blender_addon").glob("*.py")}
    assert {n for n in names if n.startswith("blender_addon/")} == expected


def test_install_enable_and_cycle_twice(extension_zip, tmp_path):
    run = run_bpy(
        f"""
        import addon_utils

        MOD = "bl_ext.user_default.kiln"
        OPERATORS = ("generate", "cancel", "import_result", "render_turntable", "import_video", "check_server")

        def state():
            prefs = bpy.context.preferences.addons.get(MOD)
            return {{
                "scene_prop": hasattr(bpy.types.Scene, "kiln"),
                "panel": hasattr(bpy.types, "VIEW3D_PT_kiln"),
                "jobs_panel": hasattr(bpy.types, "VIEW3D_PT_kiln_jobs"),
                "operators": [op for op in OPERATORS if hasattr(bpy.types, "KILN_OT_" + op)],
                "prefs_url": prefs.preferences.server_url if prefs and prefs.preferences else None,
            }}

        def main():
            before = state()
            result = bpy.ops.extensions.package_install_files(
                filepath={str(extension_zip)!r}, repo="user_default", enable_on_install=True
            )
            installed = state()
            idname = bpy.types.KILN_OT_generate.bl_idname if installed["panel"] else ""
            out_dir = str(sys.modules[MOD + ".blender_addon.preferences"].default_output_dir())
            cycles = []
            for _ in range(2):
                addon_utils.disable(MOD, default_set=True)
                off = state()
                addon_utils.enable(MOD, default_set=True)
                cycles.append((off, state()))
            addon_utils.disable(MOD, default_set=True)
            return {{"before": before, "result": sorted(result), "installed": installed, "idname": idname,
                     "out_dir": out_dir, "cycles": cycles, "final": state()}}
        """,
        tmp_path,
        timeout=180,
    )
    data = run.data
    off = {"scene_prop": False, "panel": False, "jobs_panel": False, "operators": [], "prefs_url": None}
    on = {
        "scene_prop": True,
        "panel": True,
        "jobs_panel": True,
        "operators": [
            "generate",
            "cancel",
            "import_result",
            "render_turntable",
            "import_video",
            "check_server",
        ],
        "prefs_url": "http://127.0.0.1:8765",
    }
    assert data["before"] == off
    assert data["result"] == ["FINISHED"]
    assert data["installed"] == on
    assert data["idname"] == "kiln.generate"
    # Default output folder: the extension's own user folder inside the isolated user resources.
    assert data["out_dir"] == str(tmp_path / "blender_user/extensions/.user/user_default/kiln/outputs")
    assert [tuple(c) for c in data["cycles"]] == [(off, on), (off, on)]
    assert data["final"] == off
    assert run.returncode == 0
