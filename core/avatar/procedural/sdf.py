"""Signed distance primitives and operators on numpy point batches (N, 3)."""

from __future__ import annotations

import numpy as np


def length(v: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("...i,...i->...", v, v))


def sphere(p: np.ndarray, c, r: float) -> np.ndarray:
    return length(p - np.asarray(c, np.float32)) - r


def ellipsoid(p: np.ndarray, c, radii) -> np.ndarray:
    """Approximate ellipsoid distance (a bound, exact on the surface); radii (3,)."""
    r = np.asarray(radii, np.float32)
    q = p - np.asarray(c, np.float32)
    k0 = length(q / r)
    k1 = length(q / (r * r))
    d = k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)
    # The bound tends to 0 at the centre; deep inside use a conservative interior distance.
    return np.where(k0 < 0.5, (k0 - 1.0) * float(r.min()), d)


def capsule(p: np.ndarray, a, b, r: float) -> np.ndarray:
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    pa, ba = p - a, b - a
    h = np.clip(pa @ ba / float(ba @ ba), 0.0, 1.0)
    return length(pa - h[:, None] * ba) - r


def round_box(p: np.ndarray, c, half, radius: float = 0.0) -> np.ndarray:
    q = np.abs(p - np.asarray(c, np.float32)) - (np.asarray(half, np.float32) - radius)
    outside = length(np.maximum(q, 0.0))
    inside = np.minimum(q.max(axis=1), 0.0)
    return outside + inside - radius


def torus_y(p: np.ndarray, c, major: float, minor: float) -> np.ndarray:
    """Torus whose axis is the Y axis (a ring facing -Y), centred at ``c``."""
    q = p - np.asarray(c, np.float32)
    ring = np.sqrt(q[:, 0] ** 2 + q[:, 2] ** 2) - major
    return np.sqrt(ring**2 + q[:, 1] ** 2) - minor


def cylinder_z(p: np.ndarray, c, r: float, z0: float, z1: float) -> np.ndarray:
    """Capped vertical cylinder of radius r between heights z0 < z1 around centre c (x, y)."""
    c = np.asarray(c, np.float32)
    d_r = np.sqrt((p[:, 0] - c[0]) ** 2 + (p[:, 1] - c[1]) ** 2) - r
    d_z = np.maximum(z0 - p[:, 2], p[:, 2] - z1)
    return np.minimum(np.maximum(d_r, d_z), 0.0) + length(
        np.stack([np.maximum(d_r, 0), np.maximum(d_z, 0)], 1)
    )


def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth union; k is the blend width in metres."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def intersect(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum(a, b)


def subtract(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a minus b."""
    return np.maximum(a, -b)
