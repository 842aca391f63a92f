"""Known shapes rendered as targets for the exact-denoiser guidance, and Chamfer distance to them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.fields.base import Field
from core.render.background import FixedBackground
from core.render.cameras import CameraBatch, camera_rays
from core.render.shading import Shading
from core.render.volume import RendererConfig, VolumeRenderer


@dataclass(frozen=True)
class Ball:
    """One sphere of a reference shape."""

    center: tuple[float, float, float]
    radius: float
    color: tuple[float, float, float]


class ReferenceShape(nn.Module):
    """A union of coloured spheres as a radiance field: density ``peak * sigmoid(-sdf / width)``."""

    def __init__(
        self, balls: list[Ball], bound: float = 0.5, peak: float = 400.0, width: float = 0.005
    ) -> None:
        super().__init__()
        self.bound = bound
        self.peak = peak
        self.width = width
        self.register_buffer("centers", torch.tensor([b.center for b in balls], dtype=torch.float32))
        self.register_buffer("radii", torch.tensor([b.radius for b in balls], dtype=torch.float32))
        self.register_buffer("colors", torch.tensor([b.color for b in balls], dtype=torch.float32))

    def _part_sdf(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cdist(x, self.centers) - self.radii  # (N, balls)

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        """Signed distance (metres, negative inside): (N, 3) -> (N,)."""
        return self._part_sdf(x).amin(-1)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.peak * torch.sigmoid(-self.sdf(x) / self.width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        part = self._part_sdf(x)
        sdf, which = part.min(-1)
        return self.peak * torch.sigmoid(-sdf / self.width), self.colors[which]

    def normals(self, x: torch.Tensor, density: torch.Tensor | None = None) -> torch.Tensor:
        """Exact normals of the nearest sphere's surface: (N, 3) -> (N, 3)."""
        which = self._part_sdf(x).argmin(-1)
        return F.normalize(x - self.centers[which], dim=-1, eps=1e-8)


def sphere_shape() -> ReferenceShape:
    """A 0.3 m orange ball at the origin."""
    return ReferenceShape([Ball((0.0, 0.0, 0.0), 0.3, (0.9, 0.5, 0.2))])


def asymmetric_shape() -> ReferenceShape:
    """A body with a nose toward the front (-Y) and an ear up at +X: no mirror or turn maps it onto itself."""
    return ReferenceShape(
        [
            Ball((0.0, 0.05, -0.05), 0.25, (0.3, 0.6, 0.9)),
            Ball((0.0, -0.25, -0.05), 0.12, (0.9, 0.2, 0.2)),
            Ball((0.18, 0.05, 0.22), 0.1, (0.2, 0.8, 0.3)),
        ]
    )


class RenderedTargets:
    """Target images of a reference shape, rendered like the training views (a ``TargetFn``)."""

    def __init__(
        self,
        shape: ReferenceShape,
        background: tuple[float, ...] = (1.0, 1.0, 1.0),
        samples_per_ray: int = 128,
    ) -> None:
        self.shape = shape
        self.background = FixedBackground(background)
        self.renderer = VolumeRenderer(RendererConfig(samples_per_ray=samples_per_ray, jitter=False))

    @torch.no_grad()
    def __call__(self, cameras: CameraBatch, shading: Shading, height: int, width: int) -> torch.Tensor:
        origins, dirs = camera_rays(cameras, height, width)
        b = len(cameras)
        ray_camera = torch.arange(b).repeat_interleave(height * width)
        out = self.renderer.render(
            self.shape, origins.reshape(-1, 3), dirs.reshape(-1, 3), shading, self.background, ray_camera
        )
        return out.rgb.view(b, height, width, -1).permute(0, 3, 1, 2)


def surface_points(values: np.ndarray, iso: float, bound: float) -> np.ndarray:
    """Marching-cubes vertices (M, 3) in metres of a (R, R, R) grid sampled over [-bound, bound]^3."""
    import mcubes

    verts, _ = mcubes.marching_cubes(np.ascontiguousarray(values, dtype=np.float64), float(iso))
    r = values.shape[0]
    return (verts / (r - 1) * 2.0 - 1.0) * bound


def grid_points(resolution: int, bound: float) -> np.ndarray:
    """(R^3, 3) float32 grid vertices over [-bound, bound]^3, x slowest (matches ``surface_points``)."""
    axis = np.linspace(-bound, bound, resolution, dtype=np.float32)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)


def chamfer_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Chamfer distance: ``(mean_a min_b |a - b| + mean_b min_a |a - b|) / 2`` in metres."""
    from scipy.spatial import cKDTree

    if len(a) == 0 or len(b) == 0:
        return float("inf")
    da, _ = cKDTree(b).query(a)
    db, _ = cKDTree(a).query(b)
    return float((da.mean() + db.mean()) / 2.0)


def shape_chamfer(field: Field, shape: ReferenceShape, resolution: int = 64) -> float:
    """Chamfer distance (m) between a field's iso-surface and a reference shape's surface,
    both extracted by marching cubes on the same grid over the shape's box."""
    pts = grid_points(resolution, shape.bound)
    ours = surface_points(field.value(pts).reshape((resolution,) * 3), field.default_iso, shape.bound)
    with torch.no_grad():
        sdf = shape.sdf(torch.from_numpy(pts)).numpy().reshape((resolution,) * 3)
    return chamfer_distance(ours, surface_points(sdf, 0.0, shape.bound))
