"""UV unwrap and albedo bake: colours land where the field says, no black texels."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest

from core.assets.mesh import AssetError
from core.assets.raster import nearest_per_pixel, rasterize
from core.assets.texture import bake, unwrap
from core.assets.turntable import _bilinear
from core.progress import Cancelled, Reporter


def test_rasterizer_covers_each_pixel_centre_once() -> None:
    # Two triangles splitting a 4x4 square along its diagonal cover its 16 pixel centres;
    # centres on the shared diagonal may be reported twice, nearest_per_pixel keeps one.
    xy = np.array([[[0, 0], [4, 0], [4, 4]], [[0, 0], [4, 4], [0, 4]]], np.float64)
    frags = rasterize(xy, 8, 8)
    keep = nearest_per_pixel(frags, np.zeros(len(frags.pixel)))
    assert sorted(frags.pixel[keep].tolist()) == [r * 8 + c for r in range(4) for c in range(4)]
    # Barycentric weights reproduce the pixel centres.
    centres = np.einsum("kc,kcd->kd", frags.bary, xy[frags.face])
    pix = frags.pixel
    np.testing.assert_allclose(centres, np.stack([pix % 8 + 0.5, pix // 8 + 0.5], axis=1), atol=1e-9)


def test_nearest_per_pixel_keeps_the_smallest_depth() -> None:
    # Triangle 0 covers the 4x4 square's lower-left half, triangle 1 the whole square twice
    # over (a big triangle); depth 1 for triangle 0, 2 for triangle 1: triangle 0 wins where
    # it covers, triangle 1 elsewhere.
    xy = np.array([[[0, 0], [4, 4], [0, 4]], [[0, 0], [8, 0], [0, 8]]], np.float64)
    frags = rasterize(xy, 4, 4)
    keep = nearest_per_pixel(frags, np.where(frags.face == 0, 1.0, 2.0))
    winner = dict(zip(frags.pixel[keep].tolist(), frags.face[keep].tolist(), strict=True))
    assert len(winner) == 16
    for pix, face in winner.items():
        r, c = divmod(pix, 4)
        assert face == (0 if c + 0.5 <= r + 0.5 else 1)


def test_uv_layout_is_a_split_copy_of_the_mesh(two_tone_mesh) -> None:
    layout = unwrap(two_tone_mesh, 256)
    assert layout.faces.shape == two_tone_mesh.faces.shape

    # Split faces reference the same source corners with the same winding (faces come out
    # grouped by piece, so compare as sets of rotation-normalised triples).
    def canonical(faces: np.ndarray) -> np.ndarray:
        rolled = np.stack([np.roll(faces, -k, axis=1) for k in range(3)], axis=1)  # (F, 3, 3)
        first = rolled[np.arange(len(faces)), np.argmin(faces, axis=1)]
        return first[np.lexsort(first.T[::-1])]

    np.testing.assert_array_equal(canonical(layout.vmapping[layout.faces]), canonical(two_tone_mesh.faces))
    assert layout.uvs.min() >= 0.0 and layout.uvs.max() <= 1.0
    assert layout.charts > 1


def test_bake_reproduces_colour_regions(two_tone_textured, top_colour, bottom_colour) -> None:
    tm = two_tone_textured
    # Sample the texture inside every face (three interior points) and compare with the
    # field's colour at the matching 3D point; faces within 0.02 m of the equator (the
    # colour boundary, ~1 cell) may mix both colours under bilinear filtering.
    weights = np.array([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6]])
    uv = np.einsum("sc,fcd->fsd", weights, tm.uvs[tm.faces]).reshape(-1, 2)
    pts = np.einsum("sc,fcd->fsd", weights, tm.vertices[tm.faces]).reshape(-1, 3)
    sampled = _bilinear(tm.texture.astype(np.float64) / 255.0, uv)
    expected = np.where((pts[:, 2] >= 0.5)[:, None], top_colour, bottom_colour)
    far = np.abs(pts[:, 2] - 0.5) > 0.02
    assert far.mean() > 0.9
    # Exact up to 8-bit rounding: every interior sample hits texels of its own region.
    assert np.abs(sampled[far] - expected[far]).max() <= 0.5 / 255 + 1e-6


def test_no_black_or_foreign_texels(two_tone_textured, top_colour, bottom_colour) -> None:
    # After dilation every texel, covered or not, holds one of the two region colours:
    # nothing black (unbaked) and no blend between them.
    texels = {tuple(c) for c in np.unique(two_tone_textured.texture.reshape(-1, 3), axis=0)}
    assert texels == {
        tuple(np.round(top_colour * 255).astype(int)),
        tuple(np.round(bottom_colour * 255).astype(int)),
    }


def test_vertex_data(two_tone_textured, top_colour, bottom_colour) -> None:
    tm = two_tone_textured
    # Normals of a sphere centred at (0, 0, 0.5) point along the radius.
    radial = tm.vertices - np.array([0, 0, 0.5], np.float32)
    radial /= np.linalg.norm(radial, axis=1, keepdims=True)
    assert np.einsum("ij,ij->i", radial, tm.normals).min() > 0.99
    expected = np.where((tm.vertices[:, 2] >= 0.5)[:, None], top_colour, bottom_colour)
    np.testing.assert_allclose(tm.colors, expected)


def test_texture_size_out_of_range(two_tone, two_tone_mesh) -> None:
    with pytest.raises(AssetError, match=r"texture_size.*64\.\.4096"):
        unwrap(two_tone_mesh, 8192)
    layout = unwrap(two_tone_mesh, 64)
    with pytest.raises(AssetError, match="texture_size"):
        bake(two_tone, two_tone_mesh, layout, 32)


def test_unwrap_cancellation_kills_the_xatlas_child(two_tone_mesh) -> None:
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 2  # cancel while xatlas runs in its child process

    before = set(multiprocessing.active_children())
    with pytest.raises(Cancelled):
        unwrap(two_tone_mesh, 256, Reporter(cancel=cancel))
    assert set(multiprocessing.active_children()) <= before  # the xatlas child is gone


def test_bad_albedo_shape_is_named(two_tone_mesh) -> None:
    from core.fields.analytic import SphereField

    class Grey(SphereField):
        def albedo(self, points):
            return np.full(len(points), 0.5, np.float32)  # (N,) instead of (N, 3)

    layout = unwrap(two_tone_mesh, 64)
    with pytest.raises(AssetError, match=r"Grey\.albedo returned shape .* must return \(N, 3\)"):
        bake(Grey(0.5, (0, 0, 0.5)), two_tone_mesh, layout, 64)


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1)


def test_margin_rasterisation_reaches_just_outside_the_triangle() -> None:
    tri = np.array([[2.2, 3.1], [13.7, 5.4], [6.3, 12.8]])
    frags = rasterize(tri[None], 16, 16, margin=1.5)
    rows, cols = np.divmod(np.arange(256), 16)
    centres = np.stack([cols + 0.5, rows + 0.5], axis=1)
    inside = rasterize(tri[None], 16, 16).pixel
    true = np.min([_segment_distance(centres, tri[i], tri[(i + 1) % 3]) for i in range(3)], axis=0)
    true[inside] = 0.0
    # Reported points lie on the triangle, at the reported distance, within the margin.
    assert np.all(frags.bary >= 0) and np.allclose(frags.bary.sum(axis=1), 1.0)
    points = frags.bary @ tri
    np.testing.assert_allclose(
        np.linalg.norm(points - centres[frags.pixel], axis=1), frags.distance, atol=1e-9
    )
    assert frags.distance.max() <= 1.5
    # The clamped point is at least as far as the true nearest point, so the reported set is
    # inside the true margin band, and it holds every centre within 1 pixel of the triangle
    # (clamping overestimates distances only near the corners).
    assert set(frags.pixel.tolist()) <= set(np.nonzero(true <= 1.5 + 1e-9)[0].tolist())
    assert set(np.nonzero(true <= 1.0)[0].tolist()) <= set(frags.pixel.tolist())
    assert np.all(frags.distance[np.isin(frags.pixel, inside)] == 0.0)


def test_fill_empty_copies_the_nearest_colour_and_fills_everything() -> None:
    from core.assets.texture import _fill_empty

    image = np.zeros((12, 10, 3), np.float32)
    filled = np.zeros((12, 10), bool)
    image[2, 2], filled[2, 2] = (1, 0, 0), True  # red texel near the top-left
    image[9, 8], filled[9, 8] = (0, 0, 1), True  # blue texel near the bottom-right
    _fill_empty(image, filled, Reporter())
    assert filled.all()
    colours = {tuple(c) for c in image.reshape(-1, 3).tolist()}
    assert colours == {(1.0, 0.0, 0.0), (0.0, 0.0, 1.0)}  # copied, never mixed or black
    # Texels within the two gutter passes (Manhattan distance <= 2) take their neighbour's colour.
    assert tuple(image[2, 4]) == (1, 0, 0) and tuple(image[3, 3]) == (1, 0, 0)
    assert tuple(image[9, 6]) == (0, 0, 1) and tuple(image[11, 8]) == (0, 0, 1)


def test_uv_triangles_never_overlap_and_interiors_read_their_own_surface() -> None:
    # A lumpy generated surface makes xatlas skip sliver faces whose corners are shared with
    # charted faces; moving those shared corners once stretched charted faces across the
    # atlas (here: 280k doubly-covered texels, 26 % of surface points off by > 0.2 in colour).
    # Now UV triangles may touch only along shared edges, and a random point inside any
    # triangle reads the field's colour there (the field is smooth: 2 mm moves colour < 0.01).
    import torch

    from core.assets.cleanup import clean_mesh
    from core.assets.mesh import extract_mesh
    from core.assets.texture import texture_mesh
    from core.pipelines.avatar import AvatarRequest, avatar

    torch.set_num_threads(1)
    prompt = "an elderly man with a grey beard, round glasses and a blue hoodie"
    field = avatar(AvatarRequest(prompt=prompt, seed=7)).fields[0]
    mesh, _ = clean_mesh(extract_mesh(field, resolution=128), max_faces=50000)
    size = 1024
    tm = texture_mesh(field, mesh, texture_size=size)
    frags = rasterize(tm.uvs[tm.faces].astype(np.float64) * size, size, size)
    order = np.argsort(frags.pixel, kind="stable")
    pix, face = frags.pixel[order], frags.face[order]
    dup = np.nonzero(pix[1:] == pix[:-1])[0]
    foreign = [i for i in dup if not set(tm.faces[face[i]]) & set(tm.faces[face[i + 1]])]
    assert len(foreign) < 0.002 * len(pix), f"{len(foreign)} texels covered by unrelated triangles"
    rng = np.random.default_rng(0)
    fi = rng.integers(0, len(tm.faces), 5000)
    bary = rng.dirichlet([1, 1, 1], 5000)
    points = np.einsum("nk,nkd->nd", bary, tm.vertices[tm.faces[fi]]).astype(np.float32)
    uv = np.einsum("nk,nkd->nd", bary, tm.uvs[tm.faces[fi]])
    rows = np.clip((uv[:, 1] * size).astype(int), 0, size - 1)
    cols = np.clip((uv[:, 0] * size).astype(int), 0, size - 1)
    err = np.abs(tm.texture[rows, cols] / 255.0 - field.albedo(points)).max(axis=1)
    assert np.mean(err > 0.1) < 0.01
