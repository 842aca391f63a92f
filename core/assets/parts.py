"""Material parts: label each face by the field's part, so the GLB gets one material slot per part."""

from __future__ import annotations

import dataclasses

import numpy as np

from core.assets.mesh import EVAL_BATCH, AssetError
from core.assets.texture import TexturedMesh
from core.fields.base import Field
from core.progress import Reporter

INSET = 0.25
"""Faces are labelled at their centroid pulled this many median edge lengths inside, along the
face normal: on the part that made the face, not on the border with its neighbour outside."""


def check_part_names(names: tuple[str, ...], owner: str) -> tuple[str, ...]:
    """``names`` as a tuple of distinct non-empty strings; AssetError naming ``owner`` otherwise."""
    names = tuple(names)
    if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise AssetError(f"{owner}.part_names must be distinct non-empty strings, got {names!r}")
    return names


def _query_labels(field: Field, points: np.ndarray, reporter: Reporter) -> np.ndarray:
    """(N,) int64 ``field.part_labels`` at ``points``, in batches with a cancel check between them."""
    out = np.empty(len(points), np.int64)
    count = len(field.part_names)
    for start in range(0, len(points), EVAL_BATCH):
        reporter("parts", start / max(len(points), 1), "labelling parts")
        part = points[start : start + EVAL_BATCH]
        labels = np.asarray(field.part_labels(part))
        if labels.shape != (len(part),) or not np.issubdtype(labels.dtype, np.integer):
            raise AssetError(
                f"{type(field).__name__}.part_labels returned {labels.dtype} shape {labels.shape} for "
                f"{len(part)} points; it must return (N,) integers indexing part_names"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= count):
            raise AssetError(
                f"{type(field).__name__}.part_labels returned labels {int(labels.min())}..{int(labels.max())}; "
                f"they must index its {count} part_names (0..{count - 1})"
            )
        out[start : start + len(part)] = labels
    return out


def _inset_centroids(vertices: np.ndarray, faces: np.ndarray, inset: float) -> np.ndarray:
    """(F, 3) float32 face centroids moved ``inset`` median edge lengths against the face normal."""
    tri = vertices.astype(np.float64)[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(normal, axis=1, keepdims=True)
    unit = np.where(length > 1e-20, normal / np.maximum(length, 1e-20), 0.0)  # slivers stay put
    step = inset * float(np.median(np.linalg.norm(tri[:, 1] - tri[:, 0], axis=1)))
    return (tri.mean(axis=1) - step * unit).astype(np.float32)


def edge_neighbours(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F, 3) int64: the face across edge (0, 1), (1, 2), (2, 0) of each face, or -1 where none.

    Corners are matched by position, so a mesh split along UV seams is joined again. An edge
    shared by more than two faces (non-manifold) counts as having no neighbour.
    """
    _, weld = np.unique(vertices, axis=0, return_inverse=True)
    f = weld.reshape(-1)[faces].astype(np.int64)
    a, b = f.reshape(-1), np.roll(f, -1, axis=1).reshape(-1)
    keys = np.minimum(a, b) * (int(f.max()) + 1) + np.maximum(a, b)
    order = np.argsort(keys, kind="stable")
    same = np.concatenate([[False], keys[order][1:] == keys[order][:-1], [False]])
    pair = np.nonzero(same[1:-1] & ~same[:-2] & ~same[2:])[0]  # runs of exactly two
    first, second = order[pair], order[pair + 1]
    out = np.full(len(keys), -1, np.int64)
    out[first], out[second] = second // 3, first // 3
    return out.reshape(-1, 3)


def smooth_labels(labels: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Relabel faces whose three neighbours all carry one other label (one-face islands).

    Such specks come from a label that flips on one sample; filling them leaves a border that
    follows the mesh edges without stray triangles. Borders themselves do not move.
    """
    around = np.where(neighbours >= 0, labels[np.maximum(neighbours, 0)], -1)
    island = (around[:, 0] >= 0) & (around[:, 0] == around[:, 1]) & (around[:, 1] == around[:, 2])
    return np.where(island, around[:, 0], labels)


def face_parts(
    field: Field,
    vertices: np.ndarray,
    faces: np.ndarray,
    reporter: Reporter | None = None,
    inset: float = INSET,
) -> np.ndarray:
    """(F,) int64 index into ``field.part_names`` of each face, then one-face islands filled.

    One ``part_labels`` query per face, at its centroid pulled slightly inside (``INSET``).
    """
    reporter = reporter or Reporter()
    check_part_names(field.part_names, type(field).__name__)
    points = _inset_centroids(vertices, faces, inset)
    labels = _query_labels(field, points, reporter)
    labels = smooth_labels(labels, edge_neighbours(vertices, faces))
    reporter("parts", 1.0, "parts labelled")
    return labels


def part_counts(names: tuple[str, ...], labels: np.ndarray) -> dict[str, int]:
    """``{name: faces}`` for each part with at least one face, in ``names`` order."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=len(names))
    return {name: int(c) for name, c in zip(names, counts, strict=False) if c > 0}


def label_parts(field: Field, mesh: TexturedMesh, reporter: Reporter | None = None) -> TexturedMesh:
    """A copy of ``mesh`` with ``part_names`` and ``face_parts`` from ``field``; unchanged without parts."""
    if not field.part_names:
        return mesh
    labels = face_parts(field, mesh.vertices, mesh.faces, reporter)
    return dataclasses.replace(mesh, part_names=tuple(field.part_names), face_parts=labels)
