"""Import directions from ARCHITECTURE.md, checked by parsing every module with ast."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What Blender ships besides the standard library (bpy and friends, numpy).
BLENDER_MODULES = {
    "bpy", "bpy_extras", "bpy_types", "mathutils", "bmesh", "gpu", "gpu_extras", "blf", "bgl",
    "addon_utils", "bl_ui", "bl_operators", "bl_math", "idprop", "imbuf", "aud", "freestyle",
    "rna_prop_ui", "numpy", "_bpy",
}  # fmt: skip
FORBIDDEN = {
    "core": {
        "bpy",
        "bmesh",
        "mathutils",
        "fastapi",
        "starlette",
        "uvicorn",
        "sse_starlette",
        "server",
        "blender_addon",
    },
    "server": {"bpy", "bmesh", "mathutils", "blender_addon"},
}


def imported_roots(path: Path) -> set[str]:
    """Top-level names of every absolute import in a module, including imports inside functions."""
    tree = ast.parse(path.read_text(), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", ["core", "server"])
def test_core_and_server_keep_their_distance(package):
    files = modules(package)
    assert files, f"no modules found under {package}/"
    bad = {str(f.relative_to(ROOT)): sorted(imported_roots(f) & FORBIDDEN[package]) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_blender_addon_imports_only_what_blender_ships():
    files = modules("blender_addon")
    assert files, "no modules found under blender_addon/"
    allowed = set(sys.stdlib_module_names) | BLENDER_MODULES
    bad = {str(f.relative_to(ROOT)): sorted(imported_roots(f) - allowed) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_checker_catches_a_violation(tmp_path):
    # Guard against a checker that passes everything.
    f = tmp_path / "m.py"
    f.write_text("import os\n\ndef late():\n    from torch import nn\n    import bpy.types\n")
    assert imported_roots(f) == {"os", "torch", "bpy"}


@pytest.mark.parametrize("name", ["client.py", "protocol.py", "jobflow.py", "jobregistry.py"])
def test_addon_client_and_protocol_never_import_bpy(name):
    # They run in the add-on's worker threads and in tests without Blender.
    path = ROOT / "blender_addon" / name
    assert not imported_roots(path) & BLENDER_MODULES - {"numpy"}
    relative = {
        node.module
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level > 0 and node.module
    }
    # Relative imports stay among the bpy-free modules.
    assert relative <= {"client", "protocol", "jobflow", "jobregistry"}
