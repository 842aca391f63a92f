"""Build dist/kiln-<version>.zip with Blender's own extension builder (shipped in the bpy wheel).

Does what ``blender --command extension validate`` and ``... build`` do, without a Blender
binary: validates the manifest at the repository top, builds the zip (the manifest's
``[build] paths_exclude_pattern`` keeps core/, server/, tests/ ... out), validates the zip, and
checks that only the add-on went in. Usage: ``python tools/build_extension.py [--out-dir dist]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
MANIFEST = "blender_manifest.toml"
# What the zip may hold: the manifest, the shim and the add-on package; nothing else.
ALLOWED_TOP = {MANIFEST, "__init__.py", "blender_addon"}


def bpy_root() -> Path:
    """The installed bpy package folder (found without importing bpy, which is slow)."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or spec.origin is None:
        raise SystemExit("bpy is not installed in this Python; install it with `pip install bpy==4.5.*`")
    return Path(spec.origin).parent


def load_blender_ext() -> ModuleType:
    """Import bl_pkg/cli/blender_ext.py from the bpy wheel, set up as `blender --command extension` does."""
    root = bpy_root()
    found = sorted(root.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not found:
        raise SystemExit(f"Blender's extension builder is missing under {root}; reinstall the bpy wheel")
    path = found[-1]
    spec = importlib.util.spec_from_file_location("kiln_blender_ext", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # Blender checks tags against its own list; the wheel ships it next to the builder.
    tags = path.parents[3] / "modules" / "_bpy_internal" / "extensions" / "tags.py"
    if tags.is_file():
        module.ARG_DEFAULTS_OVERRIDE.build_valid_tags = str(tags)
    return module


def check_zip(path: Path) -> list[str]:
    """Names in the zip; raise SystemExit when anything but the add-on is inside."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    stray = sorted({n.split("/", 1)[0] for n in names} - ALLOWED_TOP)
    if stray:
        raise SystemExit(
            f"{path} holds files that are not part of the add-on: {stray}; fix [build] in {MANIFEST}"
        )
    if not any(n.startswith("blender_addon/") and n.endswith(".py") for n in names):
        raise SystemExit(f"{path} holds no blender_addon/*.py; was the add-on excluded by mistake?")
    if any("__pycache__" in n or n.endswith(".pyc") for n in names):
        raise SystemExit(f"{path} holds compiled Python files; fix [build] in {MANIFEST}")
    return names


def build(out_dir: Path, source_dir: Path = REPO) -> Path:
    """Validate, build and check; returns the zip path."""
    manifest = tomllib.loads((source_dir / MANIFEST).read_text(encoding="utf-8"))
    zip_path = out_dir / f"{manifest['id']}-{manifest['version']}.zip"
    out_dir.mkdir(parents=True, exist_ok=True)
    ext = load_blender_ext()
    # 1. The manifest and the package layout.
    if ext.main(["validate", str(source_dir)], args_internal=False) != 0:
        raise SystemExit(f"{source_dir / MANIFEST} is not valid (see above)")
    # 2. The zip.
    if ext.main(
        ["build", "--source-dir", str(source_dir), "--output-filepath", str(zip_path)], args_internal=False
    ):
        raise SystemExit("the extension build failed (see above)")
    # 3. The zip as Blender will read it, and its contents.
    if ext.main(["validate", str(zip_path)], args_internal=False) != 0:
        raise SystemExit(f"{zip_path} does not validate (see above)")
    names = check_zip(zip_path)
    print(f"built {zip_path} ({zip_path.stat().st_size} bytes, {len(names)} files)")
    return zip_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out-dir", type=Path, default=REPO / "dist", help="where the zip goes (default: dist/)"
    )
    args = parser.parse_args(argv)
    build(args.out_dir.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
