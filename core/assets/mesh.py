"""Triangle meshes and their extraction from a field with marching cubes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.fields.base import Field
from core.pipelines.jobs import OutputOptions, field_spec
from core.progress import Reporter

_LIMITS = field_spec(OutputOptions, "resolution")
MIN_RESOLUTION, MAX_RESOLUTION = _LIMITS["ge"], _LIMITS["le"]


class AssetError(ValueError):
    """The asset path cannot go on with this input; the message says what to change."""


@dataclass
class Mesh:
    """An indexed triangle mesh in Kiln world space (Z up, metres).

    Attributes:
        vertices: (V, 3) float32 positions.
        faces: (F, 3) int32 vertex indices, counter-clockwise seen from outside.
    """

    vertices: np.ndarray
    faces: np.ndarray

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32).reshape(-1, 3)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int32).reshape(-1, 3)

    @property
    def num_vertices(self) -> int:
        return len(self.vertices)

    @property
    def num_faces(self) -> int:
        return len(self.faces)

    def face_normals(self) -> np.ndarray:
        """(F, 3) float64 unnormalised normals; their length is twice the face area."""
        tri = self.vertices.astype(np.float64)[self.faces]
        return np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])

    def area(self) -> float:
        """Total surface area in square metres."""
        return float(np.linalg.norm(self.face_normals(), axis=1).sum() / 2)

    def volume(self) -> float:
        """Signed enclosed volume in cubic metres (positive for a closed mesh facing outward)."""
        tri = self.vertices.astype(np.float64)[self.faces]
        return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6)

    def vertex_normals(self) -> np.ndarray:
        """(V, 3) float32 unit normals, area-weighted average of adjacent faces."""
        return vertex_normals(self.vertices, self.faces)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) float32 area-weighted unit vertex normals; isolated vertices get +Z."""
    tri = vertices.astype(np.float64)[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    acc = np.zeros((len(vertices), 3))
    for corner in range(3):
        np.add.at(acc, faces[:, corner], fn)
    length = np.linalg.norm(acc, axis=1, keepdims=True)
    out = np.where(length > 1e-30, acc / np.maximum(length, 1e-30), np.array([0.0, 0.0, 1.0]))
    return out.astype(np.float32)


@dataclass(frozen=True)
class Grid:
    """The sampling lattice of an extraction: cubic cells spanning the field's bbox.

    Attributes:
        origin: (3,) world position of grid index (0, 0, 0).
        spacing: cell edge length in metres.
        shape: samples per axis (nx, ny, nz); the longest bbox axis has ``resolution``.
    """

    origin: np.ndarray
    spacing: float
    shape: tuple[int, int, int]


def make_grid(field: Field, resolution: int) -> Grid:
    """Cubic cells: ``resolution`` samples on the longest bbox axis, proportionally fewer elsewhere."""
    try:
        lo = np.asarray(field.bbox_min, np.float64).reshape(3)
        hi = np.asarray(field.bbox_max, np.float64).reshape(3)
    except (AttributeError, ValueError, TypeError) as exc:
        raise AssetError(
            f"{type(field).__name__} needs bbox_min and bbox_max, each three numbers in metres ({exc})"
        ) from exc
    extent = hi - lo
    if not np.all(np.isfinite(extent)) or np.any(extent <= 0):
        raise AssetError(f"field bbox must be finite with max > min on every axis, got {lo} .. {hi}")
    spacing = float(extent.max() / (resolution - 1))
    counts = np.maximum(np.ceil(extent / spacing - 1e-6).astype(int) + 1, 2)
    # Centre the lattice on the bbox so the padding is symmetric.
    origin = (lo + hi) / 2 - (counts - 1) * spacing / 2
    return Grid(origin=origin, spacing=spacing, shape=(int(counts[0]), int(counts[1]), int(counts[2])))


def _check_resolution(resolution: int) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, int | np.integer):
        raise AssetError(
            f"resolution must be an integer in {MIN_RESOLUTION}..{MAX_RESOLUTION}, got {resolution!r}"
        )
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise AssetError(
            f"resolution {resolution} is out of range: use {MIN_RESOLUTION}..{MAX_RESOLUTION} "
            "(higher costs memory and time as resolution^3)"
        )


EVAL_BATCH = 1 << 18
"""Points per field.value call: a slow field (a NeRF on a CPU) still reaches a cancel check often."""


def _evaluate(field: Field, points: np.ndarray, reporter: Reporter) -> np.ndarray:
    """(N,) float32 field values, queried in batches with a cancellation check between them."""
    out = np.empty(len(points), np.float32)
    for start in range(0, len(points), EVAL_BATCH):
        if start:
            reporter.check()
        part = points[start : start + EVAL_BATCH]
        values = np.asarray(field.value(part), dtype=np.float32)
        if values.shape != (len(part),):
            raise AssetError(
                f"{type(field).__name__}.value returned shape {values.shape} for {len(part)} points; "
                "it must return one value per point, shape (N,)"
            )
        out[start : start + len(part)] = values
    return out


@dataclass
class _Band:
    """Coarse samples of a Lipschitz SDF: fine samples far from the surface take their value."""

    coarse: np.ndarray  # values at every ``step``-th lattice point (and the last one)
    step: int
    shape: tuple[int, int, int]
    threshold: float  # |value - level| above which a fine sample cannot be near a crossing
    level: float

    def _nearest(self, n: int, lo: int = 0, count: int | None = None) -> np.ndarray:
        i = np.arange(lo, lo + (n if count is None else count))
        return np.minimum(np.rint(i / self.step).astype(int), (n - 1 + self.step - 1) // self.step)

    def values(self, start: int, real: int) -> np.ndarray:
        """The nearest coarse sample's value for grid planes start .. start+real-1 -> (real, ny, nz)."""
        nx, ny, nz = self.shape
        ix = self._nearest(nx, start, real)
        return self.coarse[np.ix_(ix, self._nearest(ny), self._nearest(nz))].astype(np.float32)

    def near_surface(self, values: np.ndarray) -> np.ndarray:
        return np.abs(values - self.level) <= self.threshold


def _coarse_band(field: Field, grid: Grid, level: float, reporter: Reporter, step: int = 3) -> _Band | None:
    """A coarse pass for a Lipschitz SDF (``field.lipschitz``), or None to evaluate densely.

    A fine sample at most ``step / 2 * sqrt(3)`` cells from its nearest coarse sample q, with
    ``|d(q) - level| > L * h * (step / 2 * sqrt(3) + 1)``, is more than one cell (``L * h``)
    from the level in value: neither it nor any lattice neighbour sits on a crossing edge,
    so marching cubes only needs its sign, which q's value gives. Every crossing edge's two
    ends are therefore evaluated exactly and the mesh is the dense one.
    """
    L = getattr(field, "lipschitz", None)
    if field.kind != "sdf" or not L or L <= 0:
        return None
    threshold = float(L) * grid.spacing * (step / 2 * np.sqrt(3) + 1)
    axes = []
    for n, o in zip(grid.shape, grid.origin, strict=True):
        idx = np.minimum(np.arange(0, n - 1 + step, step), n - 1)
        axes.append((o + grid.spacing * idx).astype(np.float32))
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
    coarse = _evaluate(field, pts.reshape(-1, 3), reporter).reshape(pts.shape[:3])
    return _Band(coarse, step, grid.shape, threshold, level)


def extract_mesh(
    field: Field,
    resolution: int = 128,
    iso: float | None = None,
    reporter: Reporter | None = None,
    chunk: int = 1 << 20,
) -> Mesh:
    """Extract the surface ``field.value == iso`` with marching cubes (PyMCubes).

    The grid is evaluated and meshed slab by slab along X, each slab holding about
    ``chunk`` samples, so memory stays flat (512^3 needs no 512 MB volume) and the
    reporter (hence cancellation) is reached after every slab. Slabs share one plane
    of samples; the vertices on it come out bit-identical from both sides and are
    welded. The grid is wrapped in one layer of "outside" samples, so a surface cut by
    the bbox is capped and the mesh always closes.

    Args:
        field: the field; its ``bbox_min``/``bbox_max`` bound the grid.
        resolution: samples along the longest bbox axis, 64..512.
        iso: surface level; ``None`` uses ``field.default_iso`` (0 for an SDF).
        reporter: progress ("extract") and cancellation.
        chunk: samples per slab (at least one plane is always taken).

    Returns:
        A Mesh with faces wound counter-clockwise seen from outside.

    Raises:
        AssetError: resolution out of range, NaN/inf values, or no surface in the bbox.
        core.progress.Cancelled: when the reporter says so.
    """
    try:
        import mcubes
    except ImportError as exc:  # pragma: no cover - install problem
        raise ImportError("marching cubes needs PyMCubes: pip install PyMCubes") from exc

    reporter = reporter or Reporter()
    # 1. Check inputs and lay out the grid.
    _check_resolution(resolution)
    level = float(field.default_iso if iso is None else iso)
    if not np.isfinite(level):
        raise AssetError(f"iso must be a finite number, got {iso!r}")
    grid = make_grid(field, int(resolution))
    nx, ny, nz = grid.shape
    # Work on "inside is positive" so one winding rule serves SDFs and densities alike.
    sign = -1.0 if field.kind == "sdf" else 1.0
    target = sign * level
    outside = np.float32(target - 1.0)
    planes = max(1, int(chunk) // (ny * nz))
    band = _coarse_band(field, grid, level, reporter)
    ys = grid.origin[1] + grid.spacing * np.arange(ny)
    zs = grid.origin[2] + grid.spacing * np.arange(nz)
    yy, zz = np.meshgrid(ys.astype(np.float32), zs.astype(np.float32), indexing="ij")

    # 2. Evaluate and mesh slab by slab. Padded index p = grid index + 1.
    verts: list[np.ndarray] = []
    faces: list[np.ndarray] = []
    shared_plane: list[float] = []
    base = 0
    prev_plane = np.full((ny + 2, nz + 2), outside, np.float32)
    inside_count = 0
    vmin, vmax = np.inf, -np.inf
    start = 0
    while start <= nx:
        stop = min(start + planes, nx + 1)  # padded planes start+1 .. stop (grid planes start .. stop-1)
        reporter("extract", start / (nx + 1), f"marching cubes: plane {start}/{nx}")
        block = np.full((stop - start + 1, ny + 2, nz + 2), outside, np.float32)
        block[0] = prev_plane
        real = min(stop, nx) - start
        if real > 0:
            xs = (grid.origin[0] + grid.spacing * np.arange(start, start + real)).astype(np.float32)
            pts = np.empty((real, ny, nz, 3), np.float32)
            pts[..., 0] = xs[:, None, None]
            pts[..., 1] = yy
            pts[..., 2] = zz
            if band is None:
                values = _evaluate(field, pts.reshape(-1, 3), reporter).reshape(real, ny, nz)
            else:
                values = band.values(start, real)
                near = band.near_surface(values)
                values[near] = _evaluate(field, pts[near], reporter)
            bad = ~np.isfinite(values)
            if bad.any():
                i = np.argwhere(bad)[0]
                where = pts[i[0], i[1], i[2]]
                raise AssetError(
                    f"the field returned {int(bad.sum())} NaN/inf values in one slab, first at "
                    f"({where[0]:.3f}, {where[1]:.3f}, {where[2]:.3f}) m; fix the field there "
                    "or shrink its bbox to where it is defined"
                )
            vals = sign * values
            vmin, vmax = min(vmin, float(vals.min())), max(vmax, float(vals.max()))
            # Samples exactly on the level would put a vertex on a lattice point shared by
            # both slabs' edges; nudging them outside keeps the welding exact.
            vals[vals == target] = np.nextafter(np.float32(target), np.float32(-np.inf))
            inside_count += int((vals > target).sum())
            block[1 : real + 1, 1:-1, 1:-1] = vals
        prev_plane = block[-1].copy()
        v, f = mcubes.marching_cubes(block, target)
        if len(f):
            v[:, 0] += start  # block row 0 is padded plane `start`
            verts.append(v)
            faces.append(f.astype(np.int64) + base)
            base += len(v)
        shared_plane.append(float(start))
        start = stop
    reporter("extract", 1.0, "marching cubes done")

    # 3. Refuse inputs with no surface, with a reason.
    if inside_count == 0 or not faces:
        lo, hi = sorted((sign * vmin, sign * vmax))
        raise AssetError(
            f"no surface: the field never crosses iso={level:g} in its bbox "
            f"(values range {lo:g} .. {hi:g}); "
            "check the field's kind/sign and bbox, or pass an iso inside that range"
        )
    if inside_count == nx * ny * nz:
        raise AssetError(
            f"no surface: every grid sample is inside iso={level:g}, so the bbox cuts through "
            "solid matter; enlarge the field's bbox or raise the iso level"
        )

    # 4. Weld the vertices shared by neighbouring slabs. Both slabs put one vertex on each
    # crossed lattice edge of the shared plane, but may round its position differently in
    # the last bit, so match them by edge: (plane, floor y, floor z, which axis varies).
    vertices = np.concatenate(verts)
    tris = np.concatenate(faces)
    on_shared = np.isin(vertices[:, 0], np.asarray(shared_plane[1:], dtype=vertices.dtype))
    idx = np.nonzero(on_shared)[0]
    remap = np.arange(len(vertices))
    if len(idx):
        sv = vertices[idx]
        keys = np.stack(
            [sv[:, 0], np.floor(sv[:, 1]), np.floor(sv[:, 2]), sv[:, 1] == np.floor(sv[:, 1])], axis=1
        ).astype(np.int64)
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        remap[idx] = idx[first][inverse.reshape(-1)]
    tris = remap[tris]
    used = np.zeros(len(vertices), bool)
    used[tris] = True
    new_index = np.cumsum(used) - 1
    tris = new_index[tris]
    vertices = vertices[used]

    # 5. Padded lattice index -> world metres. On an "inside positive" volume PyMCubes
    # already winds faces counter-clockwise seen from outside (tests check the sign of the volume).
    world = grid.origin + (vertices - 1.0) * grid.spacing
    return Mesh(world.astype(np.float32), tris.astype(np.int32))
