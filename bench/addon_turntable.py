"""Turntable render cost in the Blender extension: seconds per frame of Cycles CPU at a few sizes.

Usage: ``.venv/bin/python bench/addon_turntable.py`` (needs the bpy module). Renders a textured
UV sphere through ``blender_addon.turntable.render_turntable`` and prints one line per setting.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [(64, 2, 8), (128, 4, 12), (256, 8, 12)]
"""(edge in pixels, samples, frames); make demo uses 256 px, 8 samples, 48 frames."""


def textured_sphere():
    import bpy

    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.5, location=(0.0, 0.0, 0.5))
    obj = bpy.context.active_object
    image = bpy.data.images.new("bench", 64, 64)
    image.generated_type = "UV_GRID"
    mat = bpy.data.materials.new("bench")
    mat.use_nodes = True
    tex = mat.node_tree.nodes.new("ShaderNodeTexImage")
    tex.image = image
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    mat.node_tree.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    obj.data.materials.append(mat)
    return obj


def main() -> int:
    try:
        import bpy  # noqa: F401
    except ImportError:
        print("bench/addon_turntable.py needs the bpy module: pip install bpy==4.5.*", file=sys.stderr)
        return 1
    sys.path.insert(0, str(ROOT))
    from blender_addon import turntable

    obj = textured_sphere()
    with tempfile.TemporaryDirectory() as tmp:
        for size, samples, frames in SETTINGS:
            options = turntable.TurntableOptions(frames=frames, size=size, samples=samples)
            start = time.perf_counter()
            video = turntable.render_turntable(obj, Path(tmp) / f"tt_{size}.mp4", options)
            seconds = time.perf_counter() - start
            print(
                f"turntable {size}x{size} px, {samples} samples, {frames} frames: "
                f"{seconds:.2f} s total, {seconds / frames:.3f} s/frame, {video.stat().st_size / 1e3:.0f} kB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
