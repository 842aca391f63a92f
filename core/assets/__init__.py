"""The shared asset path: field -> mesh -> clean-up -> UV + baked texture -> GLB + turntable."""

from core.assets.cleanup import CleanupReport, clean_mesh
from core.assets.gltf import build_glb, write_glb
from core.assets.mesh import AssetError, Mesh, extract_mesh
from core.assets.parts import face_parts, label_parts, part_counts
from core.assets.pipeline import AssetOptions, AssetResult, build_asset
from core.assets.texture import TexturedMesh, UVLayout, bake, texture_mesh, unwrap
from core.assets.turntable import render_turntable

__all__ = [
    "AssetError",
    "AssetOptions",
    "AssetResult",
    "CleanupReport",
    "Mesh",
    "TexturedMesh",
    "UVLayout",
    "bake",
    "build_asset",
    "build_glb",
    "clean_mesh",
    "extract_mesh",
    "face_parts",
    "label_parts",
    "part_counts",
    "render_turntable",
    "texture_mesh",
    "unwrap",
    "write_glb",
]
