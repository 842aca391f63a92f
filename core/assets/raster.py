"""A vectorised numpy triangle rasteriser, shared by the texture bake and the turntable."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from core.progress import Reporter


@dataclass
class Fragments:
    """Pixel centres covered by triangles (one row per covered (pixel, triangle) pair).

    Attributes:
        pixel: (K,) int64 flat pixel index ``row * width + col``.
        face: (K,) int64 triangle index.
        bary: (K, 3) float64 screen-space barycentric weights of the pixel centre; with
            ``margin`` > 0, of (about) the point of the triangle nearest to it (weights >= 0).
        distance: (K,) float64 pixel distance from the centre to that point (0 inside).
    """

    pixel: np.ndarray
    face: np.ndarray
    bary: np.ndarray
    distance: np.ndarray


def _pow2_ceil(x: np.ndarray) -> np.ndarray:
    return (1 << np.ceil(np.log2(np.maximum(x, 1))).astype(np.int64)).astype(np.int64)


def _batches(sizes: np.ndarray, budget: int) -> Iterator[tuple[np.ndarray, int, int]]:
    """Group triangles by power-of-two bbox size; yield (ids, box_w, box_h) with <= budget candidates."""
    bw = _pow2_ceil(sizes[:, 0])
    bh = _pow2_ceil(sizes[:, 1])
    key = bw * 65536 + bh
    order = np.argsort(key, kind="stable")
    uniq, starts = np.unique(key[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    for k, s, e in zip(uniq, starts, ends, strict=True):
        w, h = int(k // 65536), int(k % 65536)
        step = max(1, budget // (w * h))
        for i in range(s, e, step):
            yield order[i : min(i + step, e)], w, h


def rasterize(
    xy: np.ndarray,
    width: int,
    height: int,
    reporter: Reporter | None = None,
    stage: str = "raster",
    budget: int = 1 << 21,
    margin: float = 0.0,
) -> Fragments:
    """Find every pixel centre inside each triangle.

    Pixel (row r, col c) has its centre at ``(c + 0.5, r + 0.5)`` in ``xy`` units. A centre
    on an edge shared by two triangles may be reported for both; callers pick one.

    Args:
        xy: (F, 3, 2) triangle corners in pixel units (x right, y down).
        width, height: image size in pixels.
        reporter: progress and cancellation, reached after every batch.
        stage: stage name for the reporter.
        budget: candidate pixels per vectorised batch (memory ~ 100 bytes each).
        margin: also report pixel centres up to this many pixels outside a triangle, with
            the weights of (about) its nearest point on the triangle: a conservative
            rasterisation, used to bake the texels along UV chart borders.

    Returns:
        Fragments for all covered (pixel, triangle) pairs; degenerate triangles cover nothing.
    """
    reporter = reporter or Reporter()
    xy = np.asarray(xy, np.float64)
    p0, p1, p2 = xy[:, 0], xy[:, 1], xy[:, 2]
    area = (p1[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) - (p1[:, 1] - p0[:, 1]) * (p2[:, 0] - p0[:, 0])
    lo = np.ceil(xy.min(axis=1) - 0.5 - margin).astype(np.int64)
    hi = np.floor(xy.max(axis=1) - 0.5 + margin).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [width - 1, height - 1])
    valid = np.all(hi >= lo, axis=1) & (np.abs(area) > 1e-12)
    ids_all = np.nonzero(valid)[0]
    sizes = hi[ids_all] - lo[ids_all] + 1

    pixels, faces, barys, distances = [], [], [], []
    done = 0
    for sel, w, h in _batches(sizes, budget):
        reporter(stage, done / max(len(ids_all), 1))
        ids = ids_all[sel]
        gx, gy = np.meshgrid(np.arange(w), np.arange(h), indexing="xy")
        cx = lo[ids, 0][:, None] + gx.reshape(1, -1)  # (B, w*h)
        cy = lo[ids, 1][:, None] + gy.reshape(1, -1)
        px, py = cx + 0.5, cy + 0.5
        a, b, c = p0[ids], p1[ids], p2[ids]
        inv = 1.0 / area[ids][:, None]
        # Edge functions: the weight of a corner is the signed area opposite it.
        w0 = ((b[:, 0:1] - px) * (c[:, 1:2] - py) - (b[:, 1:2] - py) * (c[:, 0:1] - px)) * inv
        w1 = ((c[:, 0:1] - px) * (a[:, 1:2] - py) - (c[:, 1:2] - py) * (a[:, 0:1] - px)) * inv
        w2 = 1.0 - w0 - w1
        eps = -1e-9
        inside = (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
        in_box = (cx <= hi[ids, 0][:, None]) & (cy <= hi[ids, 1][:, None])
        if margin <= 0:
            r, k = np.nonzero(inside & in_box)
            bary = np.stack([w0[r, k], w1[r, k], w2[r, k]], axis=1)
            dist = np.zeros(len(r))
        else:
            r, k = np.nonzero(in_box)
            bary = np.clip(np.stack([w0[r, k], w1[r, k], w2[r, k]], axis=1), 0.0, None)
            bary /= bary.sum(axis=1, keepdims=True)
            near = np.einsum("kc,kcd->kd", bary, xy[ids[r]])
            dist = np.hypot(near[:, 0] - px[r, k], near[:, 1] - py[r, k])
            dist[inside[r, k]] = 0.0
            ok = dist <= margin
            r, k, bary, dist = r[ok], k[ok], bary[ok], dist[ok]
        pixels.append(cy[r, k] * width + cx[r, k])
        faces.append(ids[r])
        barys.append(bary)
        distances.append(dist)
        done += len(ids)
    reporter(stage, 1.0)
    if not pixels:
        return Fragments(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros(0))
    return Fragments(
        np.concatenate(pixels), np.concatenate(faces), np.concatenate(barys), np.concatenate(distances)
    )


def nearest_per_pixel(frags: Fragments, depth: np.ndarray) -> np.ndarray:
    """Indices into ``frags`` keeping one fragment per pixel: the one with the smallest ``depth``."""
    if len(frags.pixel) == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((depth, frags.pixel))
    pix = frags.pixel[order]
    first = np.ones(len(pix), bool)
    first[1:] = pix[1:] != pix[:-1]
    return order[first]
