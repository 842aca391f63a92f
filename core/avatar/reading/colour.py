"""Colour maths for reading photos: sRGB <-> CIELAB, colour differences, nearest palette colour."""

from __future__ import annotations

import numpy as np


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] (..., 3) -> CIELAB (..., 3) under D65."""
    c = np.asarray(rgb, np.float64)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    M = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = lin @ M.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB (..., 3) under D65 -> sRGB in [0, 1] (clipped), the inverse of ``rgb_to_lab``."""
    lab = np.asarray(lab, np.float64)
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    xyz = np.where(f > 6 / 29, f**3, (f - 16 / 116) / 7.787) * np.array([0.95047, 1.0, 1.08883])
    M = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    lin = np.clip(xyz @ np.linalg.inv(M).T, 0.0, 1.0)
    return np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)


def ref_lab(refs: dict[str, tuple[float, float, float]]) -> tuple[list[str], np.ndarray]:
    """Names and Lab values (K, 3) of a palette of display-RGB colours."""
    return list(refs), rgb_to_lab(np.array(list(refs.values())))


def nearest_colour(
    lab: np.ndarray,
    refs: dict[str, tuple[float, float, float]],
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    temperature: float = 6.0,
) -> tuple[str, float, float]:
    """Nearest reference colour to ``lab`` (3,) under per-channel ``weights``.

    Returns (name, confidence, distance); the confidence is a softmax over the negative
    distances with ``temperature`` in Delta E units, so a colour halfway between two
    references gets about 0.5.
    """
    names, ref = ref_lab(refs)
    d = np.sqrt((((ref - lab) * np.asarray(weights)) ** 2).sum(-1))
    p = np.exp(-(d - d.min()) / temperature)
    p /= p.sum()
    i = int(np.argmin(d))
    return names[i], float(p[i]), float(d[i])


def median_colour(lab: np.ndarray) -> np.ndarray:
    """Per-channel median of (N, 3) colours -> (3,); NaN when there are none."""
    return np.median(lab, axis=0) if len(lab) else np.full(3, np.nan)


def delta_e(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CIE76 colour difference between Lab arrays (..., 3)."""
    return np.sqrt(((np.asarray(a) - np.asarray(b)) ** 2).sum(-1))


def delta_e_shaded(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Colour difference that counts lightness half: shading changes L* far more than hue."""
    d = np.asarray(a) - np.asarray(b)
    return np.sqrt((0.5 * d[..., 0]) ** 2 + d[..., 1] ** 2 + d[..., 2] ** 2)
