"""Mesh clean-up: drop floaters, decimate to a face budget, orient outward, report watertightness."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.assets.child import ChildFailed, run_cancellable
from core.assets.mesh import AssetError, Mesh
from core.progress import Reporter


@dataclass(frozen=True)
class CleanupReport:
    """What ``clean_mesh`` did and what the result is.

    Attributes:
        faces_in: faces before clean-up.
        faces_out: faces after clean-up.
        vertices_out: vertices after clean-up.
        degenerate_faces_removed: faces with a repeated vertex index, dropped.
        components: connected components before dropping floaters.
        components_dropped: components smaller than the size fraction, dropped.
        faces_dropped: faces removed with those components.
        flipped: whether every face was flipped so that the enclosed volume is positive.
        decimated: whether quadric decimation ran to meet ``max_faces``.
        watertight: every edge shared by exactly two faces, in opposite directions.
        winding_consistent: no edge used twice in the same direction.
        area: surface area after clean-up, m^2.
        volume: signed enclosed volume after clean-up, m^3 (meaningful when watertight).
    """

    faces_in: int
    faces_out: int
    vertices_out: int
    degenerate_faces_removed: int
    components: int
    components_dropped: int
    faces_dropped: int
    flipped: bool
    decimated: bool
    watertight: bool
    winding_consistent: bool
    area: float
    volume: float


def _compact(vertices: np.ndarray, faces: np.ndarray) -> Mesh:
    """Drop unreferenced vertices and renumber."""
    used = np.zeros(len(vertices), bool)
    used[faces] = True
    new_index = np.cumsum(used) - 1
    return Mesh(vertices[used], new_index[faces])


def _drop_duplicate_faces(faces: np.ndarray) -> np.ndarray:
    """Remove faces over the same three vertices: both of a back-to-back pair (a zero-volume
    fin that decimation can leave), and all but one of a same-facing repeat."""
    if len(faces) == 0:
        return faces
    key = np.sort(faces, axis=1)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    dup = counts[inverse] > 1
    if not dup.any():
        return faces
    keep = ~dup
    # Orientation of a face relative to its sorted key: even permutation = +1.
    rolled = [np.roll(faces, -k, axis=1) for k in range(3)]
    same = np.any([np.all(r == key, axis=1) for r in rolled], axis=0)
    for group in np.unique(inverse[dup]):
        members = np.nonzero(inverse == group)[0]
        orient = same[members]
        n_pos, n_neg = int(orient.sum()), int((~orient).sum())
        # Back-to-back pairs cancel; any surplus in one direction keeps a single face.
        if n_pos > n_neg:
            keep[members[orient][0]] = True
        elif n_neg > n_pos:
            keep[members[~orient][0]] = True
    return faces[keep]


def face_components(faces: np.ndarray, num_vertices: int) -> tuple[int, np.ndarray]:
    """Connected components through shared vertices: (count, (F,) component label per face)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(num_vertices, num_vertices))
    count, labels = connected_components(graph, directed=False)
    return int(count), labels[faces[:, 0]]


def edge_topology(faces: np.ndarray, num_vertices: int) -> tuple[bool, bool]:
    """(watertight, winding_consistent) from the directed edges of ``faces``.

    Consistent: no directed edge appears twice. Watertight: consistent, and every
    directed edge (a, b) has its twin (b, a), so each edge joins exactly two faces.
    """
    if len(faces) == 0:
        return False, True
    a = faces.astype(np.int64)
    src = np.concatenate([a[:, 0], a[:, 1], a[:, 2]])
    dst = np.concatenate([a[:, 1], a[:, 2], a[:, 0]])
    keys = np.sort(src * num_vertices + dst)
    consistent = bool(np.all(keys[1:] != keys[:-1]))
    twins = dst * num_vertices + src
    pos = np.searchsorted(keys, twins)
    pos = np.minimum(pos, len(keys) - 1)
    closed = bool(np.all(keys[pos] == twins))
    return consistent and closed, consistent


def clean_mesh(
    mesh: Mesh,
    min_component_fraction: float = 0.01,
    max_faces: int | None = None,
    reporter: Reporter | None = None,
) -> tuple[Mesh, CleanupReport]:
    """Clean a marching-cubes mesh for use as an asset.

    Args:
        mesh: input mesh (faces counter-clockwise from outside, as ``extract_mesh`` makes).
        min_component_fraction: components whose area is below this fraction of the
            total area are floaters and are dropped; the largest component is always kept.
            0 keeps everything.
        max_faces: face budget; above it the mesh is decimated with quadric error
            (fast-simplification). ``None`` keeps every face.
        reporter: progress ("cleanup") and cancellation.

    Returns:
        The cleaned mesh and a CleanupReport.
    """
    reporter = reporter or Reporter()
    if not 0.0 <= min_component_fraction < 1.0:
        raise AssetError(f"min_component_fraction must be in [0, 1), got {min_component_fraction!r}")
    if max_faces is not None and (isinstance(max_faces, bool) or int(max_faces) < 100):
        raise AssetError(f"max_faces must be None or at least 100, got {max_faces!r}")
    if mesh.num_faces == 0:
        raise AssetError("the mesh has no faces; nothing to clean (did extraction find a surface?)")
    faces_in = mesh.num_faces

    # 1. Degenerate faces (a repeated vertex) carry no area and break edge counting.
    reporter("cleanup", 0.0, "removing degenerate faces")
    f = mesh.faces
    good = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])
    degenerate = int((~good).sum())
    current = _compact(mesh.vertices, f[good])

    # 2. Floaters: small disconnected pieces, measured by area so a dense speck counts as small.
    reporter("cleanup", 0.2, "finding connected components")
    count, labels = face_components(current.faces, current.num_vertices)
    face_area = np.linalg.norm(current.face_normals(), axis=1) / 2
    comp_area = np.bincount(labels, weights=face_area, minlength=count)
    keep_comp = comp_area >= min_component_fraction * comp_area.sum()
    keep_comp[np.argmax(comp_area)] = True
    keep_face = keep_comp[labels]
    faces_dropped = int((~keep_face).sum())
    current = _compact(current.vertices, current.faces[keep_face])

    # 3. Outward orientation: marching cubes winds consistently, so a negative total
    # volume means the whole mesh is inside out (e.g. a density field with the wrong sign).
    flipped = current.volume() < 0
    if flipped:
        current = Mesh(current.vertices, current.faces[:, [0, 2, 1]])

    # 4. Decimate to the face budget.
    decimated = False
    if max_faces is not None and current.num_faces > max_faces:
        reporter("cleanup", 0.4, f"decimating {current.num_faces} -> {max_faces} faces")
        try:
            import fast_simplification
        except ImportError as exc:  # pragma: no cover - install problem
            raise ImportError(
                "decimation needs fast-simplification: pip install fast-simplification"
            ) from exc
        try:
            v, tris = run_cancellable(
                fast_simplification.simplify,
                (current.vertices.astype(np.float64), current.faces, None, int(max_faces)),
                reporter.sub(0.4, 0.9),
                "cleanup",
                f"decimating {current.num_faces} -> {max_faces} faces",
            )
        except ChildFailed as exc:
            raise AssetError(f"decimation failed ({exc}); try a larger max_faces or None") from exc
        tris = np.asarray(tris, np.int64).reshape(-1, 3)
        good = (tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 2] != tris[:, 0])
        current = _compact(np.asarray(v, np.float32), _drop_duplicate_faces(tris[good]))
        decimated = True
    reporter("cleanup", 0.9, "checking topology")

    # 5. Report.
    watertight, consistent = edge_topology(current.faces, current.num_vertices)
    report = CleanupReport(
        faces_in=faces_in,
        faces_out=current.num_faces,
        vertices_out=current.num_vertices,
        degenerate_faces_removed=degenerate,
        components=count,
        components_dropped=int((~keep_comp).sum()),
        faces_dropped=faces_dropped,
        flipped=bool(flipped),
        decimated=decimated,
        watertight=watertight,
        winding_consistent=consistent,
        area=current.area(),
        volume=current.volume(),
    )
    reporter("cleanup", 1.0, f"{current.num_faces} faces, watertight={watertight}")
    return current, report
