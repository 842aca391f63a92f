"""Material parts: faces labelled by the field's part, one GLB primitive and material per part present."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from core.assets.gltf import build_glb, face_groups
from core.assets.mesh import AssetError
from core.assets.parts import edge_neighbours, face_parts, label_parts, part_counts, smooth_labels
from core.assets.pipeline import AssetOptions, build_asset
from core.fields.analytic import PartsSphereField
from core.progress import Cancelled, ProgressEvent, Reporter
from tests.assets.test_assets_gltf import read_glb, read_glb_bytes

SMALL = dict(resolution=64, texture_size=128, turntable_frames=0, turntable_size=64)
PRESENT = ["skin", "hair", "eyes"]  # PartsSphereField's "hat" has no faces


@pytest.fixture(scope="module")
def parts_field() -> PartsSphereField:
    return PartsSphereField()


@pytest.fixture(scope="module")
def parts_asset(parts_field, tmp_path_factory):
    events: list[ProgressEvent] = []
    out = tmp_path_factory.mktemp("parts")
    result = build_asset(parts_field, out, AssetOptions(**SMALL), Reporter(callback=events.append))
    return result, events


def _primitive_faces(gltf: dict, blob: bytes) -> dict[str, np.ndarray]:
    """Material name -> (F_k, 3, 3) glTF-space triangle corners of that material's primitive."""
    (mesh,) = gltf["meshes"]
    pos_acc = gltf["accessors"][mesh["primitives"][0]["attributes"]["POSITION"]]
    view = gltf["bufferViews"][pos_acc["bufferView"]]
    positions = np.frombuffer(blob, np.float32, pos_acc["count"] * 3, view["byteOffset"]).reshape(-1, 3)
    out = {}
    for prim in mesh["primitives"]:
        acc = gltf["accessors"][prim["indices"]]
        view = gltf["bufferViews"][acc["bufferView"]]
        indices = np.frombuffer(blob, np.uint32, acc["count"], view["byteOffset"]).reshape(-1, 3)
        out[gltf["materials"][prim["material"]]["name"]] = positions[indices]
    return out


def test_one_material_per_present_part(parts_asset) -> None:
    result, _ = parts_asset
    gltf, _ = read_glb(result.glb)
    assert [m["name"] for m in gltf["materials"]] == PRESENT
    (mesh,) = gltf["meshes"]
    prims = mesh["primitives"]
    assert [p["material"] for p in prims] == [0, 1, 2]
    # Every primitive shares the one set of vertex attributes and reads the one baked texture.
    assert all(p["attributes"] == prims[0]["attributes"] for p in prims)
    for material in gltf["materials"]:
        assert material["pbrMetallicRoughness"] == {
            "metallicFactor": 0.0,
            "roughnessFactor": 0.8,
            "baseColorTexture": {"index": 0, "texCoord": 0},
        }
    assert len(gltf["textures"]) == len(gltf["images"]) == 1
    # Faces split across the primitives, each exactly once, and the result reports them.
    counts = [gltf["accessors"][p["indices"]]["count"] // 3 for p in prims]
    assert sum(counts) == result.stats["faces"]
    assert result.parts == dict(zip(PRESENT, counts, strict=True)) == result.stats["parts"]
    assert "parts" in result.stats["timings"]


def test_each_primitive_lies_on_its_part(parts_asset, parts_field) -> None:
    """glTF is Y-up, front +Z: hair above the head's centre, skin below, eyes in front."""
    result, _ = parts_asset
    tris = _primitive_faces(*read_glb(result.glb))
    centroids = {name: t.mean(axis=1) for name, t in tris.items()}
    head = np.concatenate([centroids["skin"], centroids["hair"]])
    centre_y = (head[:, 1].min() + head[:, 1].max()) / 2  # the head's centre height, grounded
    assert np.mean(centroids["hair"][:, 1] > centre_y) > 0.98
    assert np.mean(centroids["skin"][:, 1] < centre_y) > 0.98
    # The eye sphere floats in front of the head: every eye face is further forward than the head.
    assert centroids["eyes"][:, 2].min() > head[:, 2].max()
    # Its faces are the whole small sphere: area close to 4 pi r^2.
    t = tris["eyes"].astype(np.float64)
    area = np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1).sum() / 2
    assert area == pytest.approx(4 * np.pi * parts_field.eye_radius**2, rel=0.05)


def test_validator_passes_with_several_primitives(parts_asset, validate_glb) -> None:
    result, _ = parts_asset
    run = validate_glb(result.glb)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    assert report["numErrors"] == 0 and report["numWarnings"] == 0, report["messages"]


def test_parts_progress_is_reported_in_order(parts_asset) -> None:
    _, events = parts_asset
    assert "parts" in {e.stage for e in events}
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_cancel_while_labelling_leaves_no_artifact(parts_field, tmp_path) -> None:
    seen = {"parts": False}

    def on_event(event: ProgressEvent) -> None:
        seen["parts"] |= event.stage == "parts"

    with pytest.raises(Cancelled):
        build_asset(parts_field, tmp_path, AssetOptions(**SMALL), Reporter(on_event, lambda: seen["parts"]))
    assert seen["parts"] and list(tmp_path.iterdir()) == []


def test_a_field_without_parts_keeps_one_material(two_tone, two_tone_textured, tmp_path) -> None:
    gltf, _ = read_glb_bytes(build_glb(two_tone_textured, name="two_tone"))
    assert [m["name"] for m in gltf["materials"]] == ["two_tone_material"]
    assert len(gltf["meshes"][0]["primitives"]) == 1
    assert label_parts(two_tone, two_tone_textured) is two_tone_textured
    result = build_asset(two_tone, tmp_path, AssetOptions(**SMALL))
    assert result.parts == {} and result.stats["parts"] == {}
    assert "parts" not in result.stats["timings"]
    gltf, _ = read_glb(result.glb)
    assert len(gltf["materials"]) == 1 and len(gltf["meshes"][0]["primitives"]) == 1


def _octahedron() -> tuple[np.ndarray, np.ndarray]:
    """A closed octahedron (8 faces, each with 3 edge neighbours), faces wound outward."""
    v = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float32)
    f = [[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]]
    return v, np.array(f, np.int32)


def test_edge_neighbours_join_seam_split_vertices() -> None:
    v, f = _octahedron()
    nb = edge_neighbours(v, f)
    assert (nb >= 0).all() and not (nb == np.arange(8)[:, None]).any()
    # Split every face onto its own vertices, as UV seams do: the neighbours stay the same.
    split_v, split_f = v[f.reshape(-1)], np.arange(24, dtype=np.int32).reshape(8, 3)
    np.testing.assert_array_equal(edge_neighbours(split_v, split_f), nb)
    # Faces across each other's edges name each other.
    for face in range(8):
        for other in nb[face]:
            assert face in nb[other]


def test_smoothing_fills_one_face_islands_only() -> None:
    v, f = _octahedron()
    nb = edge_neighbours(v, f)
    island = np.zeros(8, np.int64)
    island[3] = 1
    np.testing.assert_array_equal(smooth_labels(island, nb), np.zeros(8))
    halves = np.array([1, 1, 1, 1, 0, 0, 0, 0])  # upper and lower halves: a border, no island
    np.testing.assert_array_equal(smooth_labels(halves, nb), halves)


def test_face_groups_and_counts(two_tone_textured) -> None:
    labels = (two_tone_textured.vertices[two_tone_textured.faces][:, :, 2].mean(axis=1) > 0.5).astype(
        np.int64
    )
    mesh = dataclasses.replace(two_tone_textured, part_names=("a", "b", "c"), face_parts=labels * 2)
    groups = face_groups(mesh, mesh.faces, "x")
    assert [name for name, _ in groups] == ["a", "c"]
    assert sorted(map(tuple, np.concatenate([g for _, g in groups]))) == sorted(map(tuple, mesh.faces))
    assert part_counts(mesh.part_names, mesh.face_parts) == {
        "a": int((labels == 0).sum()),
        "c": int(labels.sum()),
    }


class _BadLabels(PartsSphereField):
    def __init__(self, labels) -> None:
        super().__init__()
        self.labels = labels

    def part_labels(self, points: np.ndarray) -> np.ndarray:
        return self.labels(points)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (lambda p: np.full(len(p), 4), r"labels 4\.\.4; they must index its 4 part_names"),
        (lambda p: np.zeros(len(p) + 1, np.int64), r"must return \(N,\) integers"),
        (lambda p: np.zeros(len(p), np.float32), r"must return \(N,\) integers"),
    ],
)
def test_bad_part_labels_name_the_field(labels, message, two_tone_textured) -> None:
    with pytest.raises(AssetError, match=message):
        face_parts(_BadLabels(labels), two_tone_textured.vertices, two_tone_textured.faces)


def test_part_names_must_be_distinct(two_tone_textured) -> None:
    field = PartsSphereField()
    field.part_names = ("skin", "skin", "eyes")
    with pytest.raises(AssetError, match="part_names must be distinct"):
        face_parts(field, two_tone_textured.vertices, two_tone_textured.faces)
