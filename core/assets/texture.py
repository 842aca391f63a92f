"""UV unwrap with xatlas and albedo baking from the field into a texture."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from core.assets.child import ChildFailed, run_cancellable
from core.assets.mesh import AssetError, Mesh, vertex_normals
from core.assets.raster import Fragments, nearest_per_pixel, rasterize
from core.fields.base import Field
from core.pipelines.jobs import OutputOptions, field_spec
from core.progress import Reporter

_LIMITS = field_spec(OutputOptions, "texture_size")
MIN_TEXTURE, MAX_TEXTURE = _LIMITS["ge"], _LIMITS["le"]
# Chart borders baked from their own chart; xatlas padding (in atlas texels) keeps charts
# at least twice this far apart so the borders of two charts do not meet.
BORDER_TEXELS = 1.5


@dataclass
class TexturedMesh:
    """A mesh with UVs and a baked albedo texture, split along UV seams.

    Attributes:
        vertices: (V, 3) float32 positions, Kiln world space (Z up, metres).
        faces: (F, 3) int32, counter-clockwise from outside.
        uvs: (V, 2) float32 in glTF convention: (0, 0) is the texture's top-left texel
            corner, u right, v down; texel row = v * H.
        normals: (V, 3) float32 unit normals (smooth across UV seams).
        texture: (H, W, 3) uint8 albedo, sRGB-encoded display colours, row 0 at the top.
        colors: (V, 3) float32 albedo at the vertices in display RGB [0, 1], or None.
        part_names: the field's material parts ("skin", "hair", ...); empty for a mesh without parts.
        face_parts: (F,) int64 index into ``part_names`` of each face, or None without parts.
        rig: a ``core.assets.rig.Rig`` over these vertices (bones, skin weights, shape keys),
            or None: the GLB then has no skin and no morph targets.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    normals: np.ndarray
    texture: np.ndarray
    colors: np.ndarray | None = None
    part_names: tuple[str, ...] = ()
    face_parts: np.ndarray | None = None
    rig: Any = None

    @property
    def num_vertices(self) -> int:
        return len(self.vertices)

    @property
    def num_faces(self) -> int:
        return len(self.faces)


@dataclass(frozen=True)
class UVLayout:
    """The result of unwrapping: the mesh split at seams, with UVs.

    Attributes:
        vmapping: (V', ) int64 index of the source mesh vertex for each split vertex.
        faces: (F, 3) int32 faces over the split vertices.
        uvs: (V', 2) float32 UVs in [0, 1], glTF convention (v down).
        charts: number of UV charts.
    """

    vmapping: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    charts: int


def _check_texture_size(size: int) -> None:
    if (
        isinstance(size, bool)
        or not isinstance(size, int | np.integer)
        or not MIN_TEXTURE <= size <= MAX_TEXTURE
    ):
        raise AssetError(f"texture_size must be an integer in {MIN_TEXTURE}..{MAX_TEXTURE}, got {size!r}")


def _pieces(centroids: np.ndarray, ids: np.ndarray, max_faces: int) -> list[np.ndarray]:
    """Split faces into spatially compact pieces of <= max_faces by halving the longest axis."""
    if len(ids) <= max_faces:
        return [ids]
    pts = centroids[ids]
    axis = int(np.argmax(pts.max(axis=0) - pts.min(axis=0)))
    order = np.argsort(pts[:, axis], kind="stable")
    half = len(ids) // 2
    return _pieces(centroids, ids[order[:half]], max_faces) + _pieces(centroids, ids[order[half:]], max_faces)


def _xatlas_job(
    meshes: list[tuple[np.ndarray, np.ndarray]], max_chart_area: float, resolution: int, padding: int
) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], int]:
    import xatlas

    atlas = xatlas.Atlas()
    for verts, tris in meshes:
        atlas.add_mesh(verts, tris)
    chart_options = xatlas.ChartOptions()
    chart_options.max_chart_area = max_chart_area
    pack_options = xatlas.PackOptions()
    pack_options.resolution = resolution
    pack_options.padding = padding
    atlas.generate(chart_options, pack_options)
    if atlas.atlas_count != 1:
        raise RuntimeError(f"xatlas packed into {atlas.atlas_count} atlases, expected 1")
    return [atlas[i] for i in range(atlas.mesh_count)], int(atlas.chart_count)


def unwrap(
    mesh: Mesh,
    texture_size: int = 1024,
    reporter: Reporter | None = None,
    piece_faces: int = 2000,
    chart_faces: float = 128.0,
    padding: int = 4,
) -> UVLayout:
    """Unwrap ``mesh`` to one UV atlas with xatlas.

    xatlas's chart growing is superlinear in chart and mesh size, so the mesh is cut
    into spatially compact pieces of ``piece_faces`` faces (added as separate xatlas
    meshes, packed together) and charts are capped at ``chart_faces`` average faces of
    area. That keeps a 50k-face mesh to a couple of seconds at the cost of more seams,
    which the baked texture and seam dilation make invisible.

    Args:
        mesh: the cleaned mesh.
        texture_size: target atlas resolution in texels.
        reporter: progress ("unwrap") and cancellation.
        piece_faces: faces per independently charted piece.
        chart_faces: chart area cap, in multiples of the mean face area.
        padding: texels between charts in the packed atlas.

    Returns:
        The UV layout over a seam-split copy of the mesh.
    """
    reporter = reporter or Reporter()
    _check_texture_size(texture_size)
    if mesh.num_faces == 0:
        raise AssetError("cannot unwrap a mesh with no faces")
    # 1. Cut into pieces; each piece is re-indexed locally.
    reporter("unwrap", 0.0, "cutting the mesh into pieces")
    centroids = mesh.vertices[mesh.faces].mean(axis=1)
    pieces = _pieces(centroids, np.arange(mesh.num_faces), piece_faces)
    meshes, globals_ = [], []
    for ids in pieces:
        used, local = np.unique(mesh.faces[ids], return_inverse=True)
        meshes.append((mesh.vertices[used], local.reshape(-1, 3).astype(np.uint32)))
        globals_.append(used)
    mean_area = mesh.area() / mesh.num_faces
    # 2. Chart and pack (cancellable).
    try:
        results, charts = run_cancellable(
            _xatlas_job,
            (meshes, float(mean_area * chart_faces), int(texture_size), int(padding)),
            reporter,
            "unwrap",
            "xatlas: charting and packing",
        )
    except ChildFailed as exc:
        raise AssetError(f"UV unwrap failed ({exc}); retry with fewer faces (max_faces)") from exc
    # 3. Stitch pieces back into one split mesh.
    vmaps, faces, uvs = [], [], []
    offset = 0
    for used, (vmapping, indices, uv) in zip(globals_, results, strict=True):
        vmaps.append(used[np.asarray(vmapping, np.int64)])
        faces.append(np.asarray(indices, np.int64).reshape(-1, 3) + offset)
        uvs.append(np.asarray(uv, np.float32))
        offset += len(vmapping)
    vmapping, all_faces, all_uvs = np.concatenate(vmaps), np.concatenate(faces), np.concatenate(uvs)
    vmapping, all_faces, all_uvs = _place_ignored_faces(vmapping, all_faces, all_uvs)
    reporter("unwrap", 1.0, f"{charts} charts")
    return UVLayout(vmapping=vmapping, faces=all_faces.astype(np.int32), uvs=all_uvs, charts=charts)


def _place_ignored_faces(
    vmapping: np.ndarray, faces: np.ndarray, uvs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Give UVs to the faces xatlas skipped; returns new (vmapping, faces, uvs).

    xatlas leaves near-zero-area slivers (marching cubes makes some where the surface
    grazes a lattice point) out of every chart, with all corners at UV (0, 0), where
    they would read whatever is baked in the atlas corner. Each such face is collapsed
    onto the UV of one of its corners in a real chart: a sliver has no visible area, so
    one texel of the right neighbourhood is the right colour for it. The sliver gets
    vertices of its own: its corners may be split vertices that charted faces share, and
    moving those would stretch the charted faces across the atlas.
    """
    tri = uvs[faces]  # (F, 3, 2)
    area = np.abs(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]))
    skipped = np.nonzero((area == 0) & np.all(tri.reshape(len(faces), -1) == 0, axis=1))[0]
    if len(skipped) == 0:
        return vmapping, faces, uvs
    # Source vertex -> the UV of one of its split copies that lies in a real chart.
    placed_mask = np.ones(len(faces), bool)
    placed_mask[skipped] = False
    placed = faces[placed_mask].reshape(-1)
    uv_of_source = np.full((int(vmapping.max()) + 1, 2), np.nan, np.float32)
    uv_of_source[vmapping[placed]] = uvs[placed]
    corner_uv = uv_of_source[vmapping[faces[skipped]]]  # (S, 3, 2)
    # The first corner with a charted copy gives the UV; a face with none stays at (0, 0).
    has = ~np.isnan(corner_uv[..., 0])
    first = np.argmax(has, axis=1)
    target = np.where(has.any(axis=1)[:, None], corner_uv[np.arange(len(skipped)), first], 0.0)
    new_ids = len(vmapping) + np.arange(3 * len(skipped)).reshape(-1, 3)
    vmapping = np.concatenate([vmapping, vmapping[faces[skipped]].reshape(-1)])
    uvs = np.concatenate([uvs, np.repeat(target.astype(uvs.dtype), 3, axis=0)])
    faces = faces.copy()
    faces[skipped] = new_ids
    # Drop the copies that only the slivers used, so no vertex is left at UV (0, 0).
    used, faces = np.unique(faces, return_inverse=True)
    return vmapping[used], faces.reshape(-1, 3), uvs[used]


def _fill_empty(image: np.ndarray, filled: np.ndarray, reporter: Reporter, gutter_passes: int = 2) -> None:
    """Give every empty texel of ``image`` (H, W, C) the colour of a filled one, in place.

    First ``gutter_passes`` passes copy colours from the four direct neighbours, so the
    gutters between charts take their own chart's colour; then every remaining texel
    copies the nearest filled texel in its row (left, else right), and rows with none
    copy along columns. Colours are copied, never mixed; each pass is short, so a cancel
    lands between passes even on a 4096^2 texture (one distance transform would not).
    """
    h, w = filled.shape
    for i in range(gutter_passes):
        if filled.all():
            return
        reporter("bake", i / (gutter_passes + 2), "dilating seams")
        for dst, src in (
            ((slice(1, None), slice(None)), (slice(None, -1), slice(None))),
            ((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
            ((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
            ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
        ):
            take = filled[src] & ~filled[dst]
            np.copyto(image[dst], image[src], where=take[..., None])
            filled[dst] |= take
    for axis in (1, 0):  # rows, then columns for rows that had nothing
        if filled.all():
            return
        reporter("bake", (gutter_passes + 1 - axis) / (gutter_passes + 2), "filling the atlas")
        view_img = image if axis == 1 else image.transpose(1, 0, 2)
        view_fill = filled if axis == 1 else filled.T
        n = view_fill.shape[1]
        pos = np.arange(n)
        left = np.maximum.accumulate(np.where(view_fill, pos, -1), axis=1)
        right = np.minimum.accumulate(np.where(view_fill, pos, n)[:, ::-1], axis=1)[:, ::-1]
        source = np.where(left >= 0, left, right)
        rows = np.nonzero(~view_fill & (source < n))
        view_img[rows] = view_img[rows[0], source[rows]]
        view_fill[rows] = True


def _query_albedo(field: Field, points: np.ndarray, reporter: Reporter, chunk: int = 1 << 18) -> np.ndarray:
    out = np.empty((len(points), 3), np.float32)
    for start in range(0, len(points), chunk):
        reporter("bake", start / max(len(points), 1), "querying albedo")
        part = points[start : start + chunk]
        rgb = np.asarray(field.albedo(part), np.float32)
        if rgb.shape != (len(part), 3):
            raise AssetError(
                f"{type(field).__name__}.albedo returned shape {rgb.shape} for {len(part)} points; "
                "it must return (N, 3) RGB in [0, 1]"
            )
        out[start : start + chunk] = rgb
    if not np.all(np.isfinite(out)):
        raise AssetError("the field returned NaN/inf albedo; fix the field's colour output")
    return np.clip(out, 0.0, 1.0)


def bake(
    field: Field, mesh: Mesh, layout: UVLayout, texture_size: int, reporter: Reporter | None = None
) -> TexturedMesh:
    """Bake the field's albedo into a texture over ``layout``.

    Every texel whose centre lies in a UV triangle is mapped to its surface point (the
    same barycentric weights on the 3D triangle) and coloured by ``field.albedo`` there.
    Texels up to ``BORDER_TEXELS`` outside a chart are baked the same way from the nearest
    point of the nearest triangle, so bilinear lookups at a chart's edge read that chart's
    own surface and not a neighbour packed next to it. Every texel still empty takes the
    colour of the nearest baked texel (a full dilation), so mipmaps never pull in black.
    """
    reporter = reporter or Reporter()
    _check_texture_size(texture_size)
    size = int(texture_size)
    vertices = mesh.vertices[layout.vmapping]
    # 1. Rasterise the UV triangles: texel -> (face, barycentric weights). A centre on an
    # edge shared by two faces may come twice; either face gives the same surface point.
    uv_px = layout.uvs[layout.faces].astype(np.float64) * size  # (F, 3, 2), glTF v-down = row
    frags = rasterize(uv_px, size, size, reporter.sub(0.0, 0.3), stage="bake")
    if len(frags.pixel) == 0:
        raise AssetError("no texel is covered by the UV layout; use a larger texture_size")
    # int32 / float32 keep a 4096^2 bake to ~1 GB.
    face_of = np.full(size * size, -1, np.int32)
    face_of[frags.pixel] = frags.face
    bary_of = np.zeros((size * size, 3), np.float32)
    bary_of[frags.pixel] = frags.bary
    del frags
    covered = face_of >= 0
    # 2. Chart borders: texels within BORDER_TEXELS outside a chart are baked from the
    # nearest point of the nearest chart-border triangle, so bilinear lookups at a chart's
    # edge read that chart's own surface and not the neighbour packed next to it. Only
    # triangles with a seam edge (an edge of one face in the split mesh) can be nearest.
    f = layout.faces.astype(np.int64)
    lo_v = np.minimum(f, np.roll(f, -1, axis=1)).reshape(-1)  # edges (0,1), (1,2), (2,0) per face
    hi_v = np.maximum(f, np.roll(f, -1, axis=1)).reshape(-1)
    _, edge_id, edge_count = np.unique(
        lo_v * (int(f.max()) + 1) + hi_v, return_inverse=True, return_counts=True
    )
    seam_face = np.unique(np.nonzero(edge_count[edge_id] == 1)[0] // 3)
    ring = rasterize(uv_px[seam_face], size, size, reporter.sub(0.3, 0.4), stage="bake", margin=BORDER_TEXELS)
    outside = ~covered[ring.pixel]
    if outside.any():
        sub = Fragments(
            ring.pixel[outside], seam_face[ring.face[outside]], ring.bary[outside], ring.distance[outside]
        )
        keep = nearest_per_pixel(sub, sub.distance)
        face_of[sub.pixel[keep]] = sub.face[keep]
        bary_of[sub.pixel[keep]] = sub.bary[keep]
    # 3. Texel -> surface point -> albedo.
    baked = np.nonzero(face_of >= 0)[0]
    tri = vertices.astype(np.float64)[layout.faces[face_of[baked]]]  # (K, 3, 3)
    points = np.einsum("kc,kcd->kd", bary_of[baked], tri).astype(np.float32)
    colours = _query_albedo(field, points, reporter.sub(0.4, 0.9))
    # 4. Dilate: every other texel copies a nearby baked texel, so mipmaps see no black.
    image = np.zeros((size * size, 3), np.float32)
    image[baked] = colours
    image = image.reshape(size, size, 3)
    _fill_empty(image, (face_of >= 0).reshape(size, size), reporter.sub(0.9, 1.0))
    texture = np.round(image * 255.0).astype(np.uint8)
    # 5. Per-vertex data: smooth normals of the unsplit mesh, albedo for vertex colours.
    normals = vertex_normals(mesh.vertices, mesh.faces)[layout.vmapping]
    colors = _query_albedo(field, vertices, Reporter(cancel=reporter.cancel))
    reporter("bake", 1.0, f"{len(baked)} texels baked")
    return TexturedMesh(
        vertices=vertices.astype(np.float32),
        faces=layout.faces.astype(np.int32),
        uvs=layout.uvs.astype(np.float32),
        normals=normals.astype(np.float32),
        texture=texture,
        colors=colors,
    )


def texture_mesh(
    field: Field, mesh: Mesh, texture_size: int = 1024, reporter: Reporter | None = None
) -> TexturedMesh:
    """Unwrap ``mesh`` and bake ``field``'s albedo: the whole texturing step."""
    reporter = reporter or Reporter()
    layout = unwrap(mesh, texture_size, reporter.sub(0.0, 0.6))
    return bake(field, mesh, layout, texture_size, reporter.sub(0.6, 1.0))
