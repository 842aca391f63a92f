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


def _batches(sizes: np.ndarray, budget: int) -> Iterator[tuple[np.ndarray, int, int]]:
    """Group triangles by exact bbox size; yield (ids, box_w, box_h) with <= budget candidates."""
    key = sizes[:, 0] * 65536 + sizes[:, 1]
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

    # Edge functions are affine in the pixel centre: weight_i(p) = A_i x + B_i y + C_i.
    inv_area = np.zeros_like(area)
    np.divide(1.0, area, out=inv_area, where=np.abs(area) > 1e-12)
    coef = []
    for a, b in ((p1, p2), (p2, p0)):  # weight of corner 0, then corner 1 (opposite edges)
        A = (a[:, 1] - b[:, 1]) * inv_area
        B = (b[:, 0] - a[:, 0]) * inv_area
        C = (a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]) * inv_area
        coef.append((A, B, C))

    # |edge opposite corner i|, for the margin pre-test.
    edge_len = np.stack(
        [np.linalg.norm(p2 - p1, axis=1), np.linalg.norm(p0 - p2, axis=1), np.linalg.norm(p1 - p0, axis=1)],
        axis=1,
    )
    pixels, faces, barys, distances = [], [], [], []
    done = 0
    for sel, w, h in _batches(sizes, budget):
        reporter(stage, done / max(len(ids_all), 1))
        ids = ids_all[sel]
        gx = np.tile(np.arange(w, dtype=np.float64), h)[None, :]  # (1, w*h) offsets in the box
        gy = np.repeat(np.arange(h, dtype=np.float64), w)[None, :]
        x0 = lo[ids, 0].astype(np.float64) + 0.5  # centre of the box's first pixel
        y0 = lo[ids, 1].astype(np.float64) + 0.5
        ws = []
        for A, B, C in coef:
            Ai, Bi = A[ids][:, None], B[ids][:, None]
            ws.append((A[ids] * x0 + B[ids] * y0 + C[ids])[:, None] + Ai * gx + Bi * gy)
        w0, w1 = ws
        w2 = 1.0 - w0 - w1
        eps = -1e-9
        inside = (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
        # Every box of a batch is exactly w x h (already clipped to the image).
        if margin <= 0:
            r, k = np.nonzero(inside)
            bary = np.stack([w0[r, k], w1[r, k], w2[r, k]], axis=1)
            dist = np.zeros(len(r))
        else:
            # Within `margin` of the triangle implies within `margin` of each edge's line:
            # w_i >= -margin |edge_i| / |2 area|. Only those candidates get the exact test.
            slack = margin * edge_len[ids] * np.abs(inv_area[ids])[:, None]  # (B, 3)
            near_lines = (w0 >= -slack[:, :1]) & (w1 >= -slack[:, 1:2]) & (w2 >= -slack[:, 2:])
            r_in, k_in = np.nonzero(inside)
            r, k = np.nonzero(near_lines & ~inside)
            bary = np.clip(np.stack([w0[r, k], w1[r, k], w2[r, k]], axis=1), 0.0, None)
            bary /= bary.sum(axis=1, keepdims=True)
            near = np.einsum("kc,kcd->kd", bary, xy[ids[r]])
            dist = np.hypot(near[:, 0] - (x0[r] + gx[0, k]), near[:, 1] - (y0[r] + gy[0, k]))
            ok = dist <= margin
            r = np.concatenate([r_in, r[ok]])
            k = np.concatenate([k_in, k[ok]])
            bary = np.concatenate(
                [np.stack([w0[r_in, k_in], w1[r_in, k_in], w2[r_in, k_in]], axis=1), bary[ok]]
            )
            dist = np.concatenate([np.zeros(len(r_in)), dist[ok]])
        cx = lo[ids[r], 0] + gx[0, k].astype(np.int64)
        cy = lo[ids[r], 1] + gy[0, k].astype(np.int64)
        pixels.append(cy * width + cx)
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
