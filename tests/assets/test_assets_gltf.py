"""GLB export: Khronos validator, re-import with trimesh, axes, grounding, colours, atomic writes."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import trimesh

from core.assets.gltf import build_glb, write_glb
from core.assets.mesh import AssetError
from core.assets.texture import TexturedMesh, texture_mesh
from core.assets.turntable import _bilinear


def read_glb(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    json_len, json_type = struct.unpack_from("<I4s", data, 12)
    assert json_type == b"JSON" and json_len % 4 == 0
    bin_len, bin_type = struct.unpack_from("<I4s", data, 20 + json_len)
    assert bin_type == b"BIN\x00" and bin_len % 4 == 0
    assert 28 + json_len + bin_len == len(data)
    return json.loads(data[20 : 20 + json_len]), data[28 + json_len :]


@pytest.fixture(scope="module")
def glb_path(two_tone_textured, tmp_path_factory) -> Path:
    return write_glb(two_tone_textured, tmp_path_factory.mktemp("glb") / "asset.glb", name="two_tone")


@pytest.mark.parametrize("vertex_colors", [False, True])
def test_khronos_validator_finds_no_errors(two_tone_textured, tmp_path, vertex_colors, validate_glb) -> None:
    path = write_glb(two_tone_textured, tmp_path / "asset.glb", vertex_colors=vertex_colors)
    result = validate_glb(path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["numErrors"] == 0
    assert report["numWarnings"] == 0, report["messages"]


def test_reimport_with_trimesh_keeps_vertices_and_texture(glb_path, two_tone_textured) -> None:
    scene = trimesh.load(glb_path)
    (geom,) = scene.geometry.values()
    assert len(geom.vertices) == two_tone_textured.num_vertices
    assert len(geom.faces) == two_tone_textured.num_faces
    image = geom.visual.material.baseColorTexture
    assert image.size == (256, 256)
    np.testing.assert_array_equal(np.asarray(image.convert("RGB")), two_tone_textured.texture)


def test_axes_ground_and_uv_convention(glb_path, top_colour, bottom_colour) -> None:
    """Kiln Z-up -> glTF Y-up; on the ground, centred; colours read back through trimesh's UVs."""
    scene = trimesh.load(glb_path)
    (geom,) = scene.geometry.values()
    v = np.asarray(geom.vertices)
    # The sphere (radius 0.5, Kiln centre z = 0.5) rests on y = 0 and is centred in x, z.
    assert v[:, 1].min() == pytest.approx(0.0, abs=1e-6)
    assert v[:, 1].max() == pytest.approx(1.0, abs=0.01)
    assert np.abs((v.min(axis=0) + v.max(axis=0))[[0, 2]]).max() < 1e-6
    # trimesh flips v to OpenGL's bottom-up convention; undo it and sample our way. The top
    # (glTF +Y) must be red, the bottom blue: this checks the axis swap and the UV origin.
    uv = np.asarray(geom.visual.uv, np.float64).copy()
    uv[:, 1] = 1.0 - uv[:, 1]
    texture = np.asarray(geom.visual.material.baseColorTexture.convert("RGB"), np.float64) / 255
    colours = _bilinear(texture, uv)
    top, bottom = v[:, 1] > 0.55, v[:, 1] < 0.45
    assert np.abs(colours[top] - top_colour).max() < 0.01
    assert np.abs(colours[bottom] - bottom_colour).max() < 0.01


def test_box_extents_follow_the_axis_swap(tmp_path) -> None:
    from core.assets.cleanup import clean_mesh
    from core.assets.mesh import extract_mesh
    from core.fields.analytic import BoxField

    field = BoxField((0.4, 0.3, 0.25), center=(1.0, 2.0, 3.0))  # floating, off-centre
    mesh, _ = clean_mesh(extract_mesh(field, 64))
    path = write_glb(texture_mesh(field, mesh, 64), tmp_path / "box.glb")
    gltf, _ = read_glb(path)
    acc = gltf["accessors"][gltf["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]
    lo, hi = np.array(acc["min"]), np.array(acc["max"])
    # Kiln extents (0.8, 0.6, 0.5) -> glTF (x, z, y) = (0.8, 0.5, 0.6); MC bevels shave < 1 cell.
    np.testing.assert_allclose(hi - lo, [0.8, 0.5, 0.6], atol=0.015)
    assert lo[1] == pytest.approx(0.0, abs=1e-7)  # grounded
    np.testing.assert_allclose((lo + hi)[[0, 2]], 0.0, atol=1e-6)  # centred


def test_material_and_vertex_colours(two_tone_textured, tmp_path) -> None:
    gltf, blob = read_glb(write_glb(two_tone_textured, tmp_path / "a.glb"))
    pbr = gltf["materials"][0]["pbrMetallicRoughness"]
    assert pbr["baseColorTexture"]["index"] == 0
    assert gltf["images"][0]["mimeType"] == "image/png"
    assert gltf["asset"]["version"] == "2.0"

    gltf, blob = read_glb(write_glb(two_tone_textured, tmp_path / "b.glb", vertex_colors=True))
    prim = gltf["meshes"][0]["primitives"][0]
    assert "baseColorTexture" not in gltf["materials"][0]["pbrMetallicRoughness"]
    acc = gltf["accessors"][prim["attributes"]["COLOR_0"]]
    view = gltf["bufferViews"][acc["bufferView"]]
    colours = np.frombuffer(blob, np.float32, acc["count"] * 3, view.get("byteOffset", 0)).reshape(-1, 3)
    # COLOR_0 is linear: sRGB 0.9 -> 0.7874, 0.1 -> 0.01002 (IEC 61966-2-1).
    red = colours[np.argmax(colours[:, 0])]
    np.testing.assert_allclose(red, [0.7874, 0.01002, 0.01002], atol=1e-4)


def test_write_is_atomic_and_readable(two_tone_textured, tmp_path) -> None:
    path = write_glb(two_tone_textured, tmp_path / "asset.glb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["asset.glb"]  # no temp file left
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_bad_inputs(two_tone_textured) -> None:
    empty = TexturedMesh(
        np.zeros((0, 3), np.float32),
        np.zeros((0, 3), np.int32),
        np.zeros((0, 2)),
        np.zeros((0, 3)),
        np.zeros((4, 4, 3), np.uint8),
    )
    with pytest.raises(AssetError, match="empty mesh"):
        build_glb(empty)
    tm = two_tone_textured
    grey = TexturedMesh(tm.vertices, tm.faces, tm.uvs, tm.normals, tm.texture[..., 0])
    with pytest.raises(AssetError, match=r"\(H, W, 3\) uint8"):
        build_glb(grey)
    no_colours = TexturedMesh(tm.vertices, tm.faces, tm.uvs, tm.normals, tm.texture, None)
    with pytest.raises(AssetError, match="vertex_colors"):
        build_glb(no_colours, vertex_colors=True)


def test_positions_map_kiln_z_up_to_gltf_y_up_exactly() -> None:
    # Kiln (x, y, z) -> glTF (x, z, -y): the front (-Y) of a Kiln asset faces glTF +Z.
    verts = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, -2.0, 0.0], [0.0, 0.0, 3.0]], np.float32)
    faces = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]], np.int32)
    mesh = TexturedMesh(
        verts,
        faces,
        np.zeros((4, 2), np.float32),
        np.tile([0.0, 0.0, 1.0], (4, 1)),
        np.zeros((2, 2, 3), np.uint8),
    )
    gltf, blob = read_glb_bytes(build_glb(mesh, recentre=False))
    prim = gltf["meshes"][0]["primitives"][0]
    acc = gltf["accessors"][prim["attributes"]["POSITION"]]
    view = gltf["bufferViews"][acc["bufferView"]]
    pos = np.frombuffer(blob, np.float32, 12, view["byteOffset"]).reshape(4, 3)
    np.testing.assert_array_equal(pos, [[0, 0, 0], [1, 0, 0], [0, 0, 2], [0, 3, 0]])
    acc = gltf["accessors"][prim["attributes"]["NORMAL"]]
    view = gltf["bufferViews"][acc["bufferView"]]
    normals = np.frombuffer(blob, np.float32, 12, view["byteOffset"]).reshape(4, 3)
    np.testing.assert_array_equal(normals, np.tile([0, 1, 0], (4, 1)))  # Kiln +Z is glTF +Y


def read_glb_bytes(data: bytes) -> tuple[dict, bytes]:
    json_len = struct.unpack_from("<I", data, 12)[0]
    return json.loads(data[20 : 20 + json_len]), data[28 + json_len :]
