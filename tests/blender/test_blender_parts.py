"""A GLB with one material per part imports as one object with those material slots, none merged."""

from __future__ import annotations

from core.assets.cleanup import clean_mesh
from core.assets.gltf import write_glb
from core.assets.mesh import extract_mesh
from core.assets.parts import label_parts, part_counts
from core.assets.texture import texture_mesh
from core.fields.analytic import PartsSphereField
from tests.blender.bpy_harness import requires_bpy, run_bpy

pytestmark = requires_bpy


def test_import_keeps_one_material_slot_per_part(tmp_path):
    field = PartsSphereField()
    mesh, _ = clean_mesh(extract_mesh(field, 64))
    textured = label_parts(field, texture_mesh(field, mesh, 128))
    glb = write_glb(textured, tmp_path / "parts.glb", name="parts")
    run = run_bpy(
        f"""
        from pathlib import Path
        from blender_addon import importer

        def main():
            obj = importer.import_glb(bpy.context, Path({str(glb)!r}), "a parted sphere")
            faces = {{}}
            for poly in obj.data.polygons:
                name = obj.material_slots[poly.material_index].material.name
                faces[name] = faces.get(name, 0) + 1
            images = importer.material_images(obj)
            return {{"type": obj.type, "slots": [s.material.name for s in obj.material_slots], "faces": faces,
                "images": [i.name for i in images], "packed": [bool(i.packed_file) for i in images]}}
        """,
        tmp_path,
    )
    d = run.data
    assert d["type"] == "MESH"
    assert d["slots"] == ["skin", "hair", "eyes"]
    assert d["faces"] == part_counts(textured.part_names, textured.face_parts)
    # The parts share one baked texture, packed once.
    assert d["images"] == ["parts_basecolor"] and d["packed"] == [True]
