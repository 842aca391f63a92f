"""The Field interface that every engine ends in and the asset path consumes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import numpy as np

FieldKind = Literal["sdf", "density"]


class Field(ABC):
    """A 3D field in Kiln world space: Z up, metres, the front of an asset facing -Y.

    Subclasses set ``bbox_min``/``bbox_max`` (the region that holds the surface)
    and ``kind``:

    - ``"sdf"``: ``value`` is a signed distance, negative inside; the surface is
      ``value == iso`` with ``iso`` defaulting to 0.
    - ``"density"``: ``value`` is a volume density, large inside; the surface is
      ``value == iso`` with ``iso`` defaulting to ``default_iso``.

    Both methods take float32 points of shape (N, 3) and must accept any N,
    including 0. Callers chunk large queries; implementations need not.
    """

    kind: FieldKind = "sdf"
    default_iso: float = 0.0
    bbox_min: np.ndarray
    bbox_max: np.ndarray
    lipschitz: float | None = None
    """For an SDF, a bound on |grad value| (1 for an exact distance). When set, mesh
    extraction evaluates the fine grid only in a band around the surface found by a coarse
    pass (the mesh is the same, the avatar's extraction ~5x faster); None evaluates every sample."""

    part_names: tuple[str, ...] = ()
    """Names of the surface's parts as an artist would pick materials ("skin", "hair", "eyes",
    "glasses", "cloth", "hat"); empty for a field without parts. The asset path gives each part
    present its own material slot."""

    def part_labels(self, points: np.ndarray) -> np.ndarray:
        """Index into ``part_names`` of the part at ``points`` (N, 3) -> (N,) int64."""
        raise NotImplementedError(f"{type(self).__name__} has no parts (part_names is empty)")

    @abstractmethod
    def value(self, points: np.ndarray) -> np.ndarray:
        """Signed distance or density at ``points`` (N, 3) -> (N,) float32."""

    @abstractmethod
    def albedo(self, points: np.ndarray) -> np.ndarray:
        """Base colour in linear-ish display RGB [0, 1] at ``points`` (N, 3) -> (N, 3) float32."""

    def inside(self, values: np.ndarray, iso: float | None = None) -> np.ndarray:
        """Boolean mask of which ``values`` lie inside the surface."""
        level = self.default_iso if iso is None else iso
        return values < level if self.kind == "sdf" else values > level
