"""Clean-up: floaters, orientation, decimation, duplicate faces and the topology report."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.assets.cleanup import _drop_duplicate_faces, clean_mesh, edge_topology
from core.assets.mesh import AssetError, Mesh, extract_mesh
from core.fields.analytic import SphereField


class SphereWithSpeck(SphereField):
    """A 0.4 m sphere plus a 0.04 m speck 0.6 m away (union of two SDFs)."""

    def __init__(self) -> None:
        super().__init__(0.4, (0.0, 0.0, 0.0))
        self.bbox_min = np.array([-0.5, -0.5, -0.5], np.float32)
        self.bbox_max = np.array([0.75, 0.5, 0.5], np.float32)

    def value(self, points):
        p = np.asarray(points, np.float32)
        big = np.linalg.norm(p, axis=1) - 0.4
        speck = np.linalg.norm(p - np.array([0.65, 0.0, 0.0], np.float32), axis=1) - 0.04
        return np.minimum(big, speck).astype(np.float32)


@pytest.fixture(scope="module")
def speck_mesh() -> Mesh:
    return extract_mesh(SphereWithSpeck(), 64)


def test_floaters_are_dropped(speck_mesh: Mesh) -> None:
    # Speck area / total = 0.04^2 / (0.4^2 + 0.04^2) = 0.0099 < 0.01.
    cleaned, report = clean_mesh(speck_mesh, min_component_fraction=0.05)
    assert report.components == 2
    assert report.components_dropped == 1
    assert report.faces_dropped > 0
    assert cleaned.num_faces == speck_mesh.num_faces - report.faces_dropped
    assert cleaned.vertices[:, 0].max() < 0.41  # nothing left near the speck at x = 0.65
    assert report.area == pytest.approx(4 * math.pi * 0.16, rel=0.01)
    assert report.watertight and report.winding_consistent


def test_zero_fraction_keeps_every_component(speck_mesh: Mesh) -> None:
    cleaned, report = clean_mesh(speck_mesh, min_component_fraction=0.0)
    assert report.components_dropped == 0
    assert cleaned.num_faces == speck_mesh.num_faces


def test_inside_out_mesh_is_flipped(speck_mesh: Mesh) -> None:
    inverted = Mesh(speck_mesh.vertices, speck_mesh.faces[:, [0, 2, 1]])
    assert inverted.volume() < 0
    cleaned, report = clean_mesh(inverted)
    assert report.flipped
    assert cleaned.volume() == pytest.approx(4 / 3 * math.pi * 0.4**3, rel=0.01)


def test_decimation_meets_the_budget_and_keeps_the_shape() -> None:
    mesh = extract_mesh(SphereField(0.5, (0, 0, 0.5)), 96)
    assert mesh.num_faces > 60000
    cleaned, report = clean_mesh(mesh, max_faces=5000)
    assert report.decimated
    assert 4500 <= cleaned.num_faces <= 5000
    assert report.watertight
    # Quadric decimation of a smooth sphere to 5k faces: the inscribed polyhedron loses
    # < 1% of the volume (measured 0.3%).
    assert cleaned.volume() == pytest.approx(4 / 3 * math.pi * 0.125, rel=0.01)


def test_degenerate_faces_are_removed() -> None:
    mesh = extract_mesh(SphereField(0.5, (0, 0, 0.5)), 64)
    bad = Mesh(mesh.vertices, np.vstack([mesh.faces, [[0, 0, 1], [5, 6, 5]]]))
    cleaned, report = clean_mesh(bad)
    assert report.degenerate_faces_removed == 2
    assert cleaned.num_faces == mesh.num_faces
    assert report.watertight


def test_edge_topology_detects_holes_and_flips() -> None:
    # A tetrahedron, counter-clockwise from outside.
    faces = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])
    assert edge_topology(faces, 4) == (True, True)
    assert edge_topology(faces[:3], 4) == (False, True)  # a hole
    flipped = faces.copy()
    flipped[0] = flipped[0, [0, 2, 1]]
    assert edge_topology(flipped, 4) == (False, False)  # one face wound the other way


def test_back_to_back_duplicates_cancel() -> None:
    faces = np.array([[0, 1, 2], [1, 0, 2], [2, 3, 4], [3, 4, 2], [5, 6, 7]])
    # [0,1,2] and [1,0,2] face opposite ways: both go; [2,3,4] and [3,4,2] are the same face: one stays.
    out = _drop_duplicate_faces(faces)
    assert sorted(map(tuple, out)) == [(2, 3, 4), (5, 6, 7)]


def test_bad_arguments() -> None:
    mesh = extract_mesh(SphereField(), 64)
    with pytest.raises(AssetError, match="min_component_fraction"):
        clean_mesh(mesh, min_component_fraction=1.5)
    with pytest.raises(AssetError, match="max_faces"):
        clean_mesh(mesh, max_faces=10)
    with pytest.raises(AssetError, match="no faces"):
        clean_mesh(Mesh(np.zeros((0, 3)), np.zeros((0, 3))))
