"""Analytic signed-distance fields with known geometry, for tests, benchmarks and the demo."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.fields.base import Field

Vec3 = Sequence[float]


def _vec3(value: Vec3, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32).reshape(-1)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be three finite numbers, got {value!r}")
    return arr


def _colour(value: Vec3, name: str) -> np.ndarray:
    arr = _vec3(value, name)
    if np.any(arr < 0.0) or np.any(arr > 1.0):
        raise ValueError(f"{name} must be an RGB triple in [0, 1], got {value!r}")
    return arr


def _points(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {pts.shape}")
    return pts


class SphereField(Field):
    """A sphere: exact signed distance ``|p - center| - radius``.

    Ground truth for tests: area ``4 pi r^2``, volume ``4/3 pi r^3``.
    """

    kind = "sdf"

    def __init__(
        self,
        radius: float = 0.5,
        center: Vec3 = (0.0, 0.0, 0.5),
        albedo: Vec3 = (0.8, 0.8, 0.8),
    ) -> None:
        if not radius > 0:
            raise ValueError(f"radius must be > 0 metres, got {radius!r}")
        self.radius = float(radius)
        self.center = _vec3(center, "center")
        self.albedo_rgb = _colour(albedo, "albedo")
        # 15% margin so the surface sits well inside the extraction grid.
        half = np.float32(self.radius * 1.15)
        self.bbox_min = self.center - half
        self.bbox_max = self.center + half

    def value(self, points: np.ndarray) -> np.ndarray:
        d = _points(points) - self.center
        return (np.sqrt(np.einsum("ij,ij->i", d, d)) - self.radius).astype(np.float32)

    def albedo(self, points: np.ndarray) -> np.ndarray:
        pts = _points(points)
        return np.broadcast_to(self.albedo_rgb, (len(pts), 3)).astype(np.float32)


class TwoToneSphereField(SphereField):
    """A sphere whose top half (z above the centre) is one colour and bottom half another.

    The colour split is a known region map for testing the texture bake.
    """

    def __init__(
        self,
        radius: float = 0.5,
        center: Vec3 = (0.0, 0.0, 0.5),
        top_albedo: Vec3 = (0.9, 0.1, 0.1),
        bottom_albedo: Vec3 = (0.1, 0.2, 0.9),
    ) -> None:
        super().__init__(radius, center, top_albedo)
        self.top_albedo = _colour(top_albedo, "top_albedo")
        self.bottom_albedo = _colour(bottom_albedo, "bottom_albedo")

    def albedo(self, points: np.ndarray) -> np.ndarray:
        pts = _points(points)
        top = (pts[:, 2] >= self.center[2])[:, None]
        return np.where(top, self.top_albedo, self.bottom_albedo).astype(np.float32)


class PartsSphereField(Field):
    """A "head" sphere with a separate small "eye" sphere in front of it, in three material parts.

    Parts (``part_names``): "skin" on the head below its centre, "hair" above it, "eyes" on the
    small sphere; a fourth, "hat", is named but never labelled (a part with no faces). Each
    part has its own colour. Ground truth for tests of per-part materials.
    """

    kind = "sdf"
    lipschitz = 1.0
    part_names = ("skin", "hair", "eyes", "hat")
    COLOURS = np.array(
        [[0.85, 0.65, 0.5], [0.3, 0.15, 0.05], [0.95, 0.95, 0.95], [0.1, 0.1, 0.6]], np.float32
    )

    def __init__(
        self,
        radius: float = 0.4,
        center: Vec3 = (0.0, 0.0, 0.5),
        eye_radius: float = 0.1,
        eye_gap: float = 0.08,
    ) -> None:
        if not radius > 0 or not eye_radius > 0 or not eye_gap > 0:
            raise ValueError(
                f"radius, eye_radius and eye_gap must be > 0 metres, got {radius, eye_radius, eye_gap}"
            )
        self.radius, self.eye_radius = float(radius), float(eye_radius)
        self.center = _vec3(center, "center")
        # The eye floats in front of the head (-Y), separated by ``eye_gap``.
        self.eye_center = self.center - np.array([0.0, radius + eye_gap + eye_radius, 0.0], np.float32)
        margin = np.float32(0.15 * self.radius)
        self.bbox_min = np.minimum(self.center - radius, self.eye_center - eye_radius) - margin
        self.bbox_max = self.center + radius + margin

    def _distances(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pts = _points(points)
        head = np.linalg.norm(pts - self.center, axis=1) - self.radius
        eye = np.linalg.norm(pts - self.eye_center, axis=1) - self.eye_radius
        return head, eye

    def value(self, points: np.ndarray) -> np.ndarray:
        head, eye = self._distances(points)
        return np.minimum(head, eye).astype(np.float32)

    def part_labels(self, points: np.ndarray) -> np.ndarray:
        """0 skin (head, below the centre), 1 hair (head, above), 2 eyes (nearer the small sphere)."""
        head, eye = self._distances(points)
        upper = _points(points)[:, 2] > self.center[2]
        return np.where(eye < head, 2, np.where(upper, 1, 0)).astype(np.int64)

    def albedo(self, points: np.ndarray) -> np.ndarray:
        return self.COLOURS[self.part_labels(points)]


class BoxField(Field):
    """An axis-aligned box: exact signed distance (Inigo Quilez's box formula).

    Ground truth for tests: area ``8 (ab + bc + ca)``, volume ``8 abc`` for half extents a, b, c.
    """

    kind = "sdf"

    def __init__(
        self,
        half_extents: Vec3 = (0.4, 0.3, 0.25),
        center: Vec3 | None = None,
        albedo: Vec3 = (0.7, 0.5, 0.3),
    ) -> None:
        self.half_extents = _vec3(half_extents, "half_extents")
        if np.any(self.half_extents <= 0):
            raise ValueError(f"half_extents must all be > 0 metres, got {half_extents!r}")
        # Default: resting on the ground plane z = 0.
        self.center = (
            _vec3(center, "center")
            if center is not None
            else np.array([0, 0, self.half_extents[2]], np.float32)
        )
        self.albedo_rgb = _colour(albedo, "albedo")
        margin = np.float32(0.15 * float(self.half_extents.max()))
        self.bbox_min = self.center - self.half_extents - margin
        self.bbox_max = self.center + self.half_extents + margin

    def value(self, points: np.ndarray) -> np.ndarray:
        q = np.abs(_points(points) - self.center) - self.half_extents
        outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
        inside = np.minimum(q.max(axis=1), 0.0)
        return (outside + inside).astype(np.float32)

    def albedo(self, points: np.ndarray) -> np.ndarray:
        pts = _points(points)
        return np.broadcast_to(self.albedo_rgb, (len(pts), 3)).astype(np.float32)


class TorusKnotField(Field):
    """A ribbed (p, q) torus knot: a detailed shape for benchmarks and demos.

    The knot's centre line winds ``p`` times around the Z axis and ``q`` times around a
    torus of radii (``major``, ``minor``). At a point's azimuth the line crosses the
    meridional half-plane at ``p`` known points; the value is the distance to the nearest
    of them minus the tube radius. That is an upper bound of the true distance (exact on
    the tube's cross-section plane), fine for meshing but not an exact SDF. The tube
    radius is modulated by ``ribs`` bumps along the line, and the colour alternates in
    ``bands`` stripes along it, so both geometry and texture carry fine detail.
    """

    kind = "sdf"

    def __init__(
        self,
        p: int = 2,
        q: int = 3,
        major: float = 0.32,
        minor: float = 0.14,
        tube: float = 0.07,
        ribs: int = 60,
        rib_depth: float = 0.15,
        bands: int = 12,
        center: Vec3 = (0.0, 0.0, 0.3),
        colours: Sequence[Vec3] = ((0.85, 0.55, 0.1), (0.15, 0.35, 0.75)),
    ) -> None:
        if p < 1 or q < 1 or np.gcd(p, q) != 1:
            raise ValueError(f"p and q must be coprime positive integers, got p={p}, q={q}")
        if not 0 < tube < minor < major:
            raise ValueError("need 0 < tube < minor < major (metres) so the knot does not self-intersect")
        self.p, self.q = int(p), int(q)
        self.major, self.minor, self.tube = float(major), float(minor), float(tube)
        self.ribs, self.rib_depth, self.bands = int(ribs), float(rib_depth), int(bands)
        self.center = _vec3(center, "center")
        self.colours = np.stack([_colour(c, "colours[i]") for c in colours])
        reach = self.minor + self.tube * (1 + self.rib_depth) * 1.15
        half = np.array([self.major + reach, self.major + reach, reach], np.float32)
        self.bbox_min = self.center - half
        self.bbox_max = self.center + half

    def _nearest(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,) distance to the nearest centre-line crossing and (N,) its curve parameter in [0, 2pi)."""
        local = _points(points).astype(np.float64) - self.center
        rho = np.hypot(local[:, 0], local[:, 1])
        phi = np.arctan2(local[:, 1], local[:, 0])
        best = np.full(len(local), np.inf)
        best_s = np.zeros(len(local))
        for k in range(self.p):
            s = (phi + 2 * np.pi * k) / self.p
            theta = self.q * s
            d = np.hypot(
                rho - (self.major + self.minor * np.cos(theta)), local[:, 2] - self.minor * np.sin(theta)
            )
            closer = d < best
            best = np.where(closer, d, best)
            best_s = np.where(closer, s, best_s)
        return best, np.mod(best_s, 2 * np.pi)

    def value(self, points: np.ndarray) -> np.ndarray:
        dist, s = self._nearest(points)
        radius = self.tube * (1 + self.rib_depth * np.sin(self.ribs * s))
        return (dist - radius).astype(np.float32)

    def albedo(self, points: np.ndarray) -> np.ndarray:
        _, s = self._nearest(points)
        band = np.floor(s / (2 * np.pi) * self.bands).astype(np.int64) % len(self.colours)
        return self.colours[band].astype(np.float32)
