"""Volume rendering of a density/albedo field inside its box: sampling, empty-space skipping,
early ray termination and alpha compositing."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import nn

from core.render.occupancy import OccupancyGrid
from core.render.shading import Shading, shade


class RadianceField(Protocol):
    """What the renderer asks of a field (``NeRFField`` and the reference shapes answer it)."""

    bound: float

    def density(self, x: torch.Tensor) -> torch.Tensor: ...  # (N, 3) -> (N,)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...  # -> (N,), (N, 3)

    def normals(self, x: torch.Tensor, density: torch.Tensor | None = None) -> torch.Tensor: ...  # -> (N, 3)


@dataclass
class RendererConfig:
    """Sampling along rays."""

    samples_per_ray: int = 64
    """Ray steps across the box diagonal; the step length is the diagonal divided by this."""
    transmittance_threshold: float = 1e-3
    """Samples behind a point where transmittance drops below this are skipped (0 keeps all)."""
    jitter: bool = True
    """Randomise sample positions within their step (training); False samples step centres."""
    normal_weight_threshold: float = 1e-4
    """Normals are computed only for samples whose no-grad weight is above this (others shade ambient)."""
    normals: Literal["finite_difference", "autograd"] = "finite_difference"
    """How normals are computed; autograd needs a second backward and is the slow baseline."""


@dataclass
class RenderOutput:
    """What a render of R rays gives back."""

    rgb: torch.Tensor
    """(R, C) composited colour over the background (C = 3, or 4 latent channels)."""
    opacity: torch.Tensor
    """(R,) accumulated weight in [0, 1]."""
    depth: torch.Tensor
    """(R,) expected distance along the ray, metres (0 where empty)."""
    normal: torch.Tensor | None
    """(R, 3) weight-averaged normals, when shading needed them."""
    orientation: torch.Tensor | None
    """Scalar orientation penalty ``mean_rays sum_i w_i max(0, n_i . d)^2`` (DreamFusion), or None."""
    samples: int
    """Samples evaluated with gradients (after skipping)."""
    candidates: int
    """Samples in the box before occupancy skipping and early termination."""


def _exclusive_transmittance(tau: torch.Tensor) -> torch.Tensor:
    """T_i = exp(-sum_{j<i} tau_j) along dim 1 of (R, N) optical depths."""
    return torch.exp(-(torch.cumsum(tau, dim=1) - tau))


class VolumeRenderer:
    """Renders rays through ``[-bound, bound]^3`` with fixed-length steps."""

    def __init__(self, config: RendererConfig) -> None:
        self.config = config

    def step_size(self, bound: float) -> float:
        return 2.0 * math.sqrt(3.0) * bound / self.config.samples_per_ray

    def render(
        self,
        field: RadianceField,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        shading: Shading,
        background: nn.Module,
        ray_camera: torch.Tensor,
        occupancy: OccupancyGrid | None = None,
        generator: torch.Generator | None = None,
    ) -> RenderOutput:
        """Render R rays.

        Args:
            field: the radiance field.
            origins: (R, 3) ray origins, metres.
            dirs: (R, 3) unit ray directions.
            shading: the step's shading, per camera.
            background: module mapping (R, 3) directions to (R, 3) colours.
            ray_camera: (R,) long index of each ray's camera into ``shading``.
            occupancy: skip samples in cells it marks empty (None: keep all).
            generator: random source of the sample jitter.
        """
        cfg = self.config
        bound = float(field.bound)
        n = cfg.samples_per_ray
        r = origins.shape[0]
        step = self.step_size(bound)

        # 1. Ray/box intersection (slab method); rays that miss get near >= far.
        safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
        t0 = (-bound - origins) / safe
        t1 = (bound - origins) / safe
        near = torch.minimum(t0, t1).amax(-1).clamp(min=0.0)
        far = torch.maximum(t0, t1).amin(-1)

        # 2. Fixed-length steps from the entry point; a jitter moves each within its step.
        dev = origins.device
        u = (
            torch.rand(r, n, generator=generator).to(dev)
            if cfg.jitter
            else torch.full((r, n), 0.5, device=dev)
        )
        t = near.unsqueeze(1) + (torch.arange(n, dtype=origins.dtype, device=dev) + u) * step  # (R, N)
        valid = t < far.unsqueeze(1)
        points = origins.unsqueeze(1) + t.unsqueeze(-1) * dirs.unsqueeze(1)  # (R, N, 3)
        candidates = int(valid.sum())
        if occupancy is not None:
            valid = valid & occupancy.lookup(points)

        # 3. Early ray termination: a cheap no-grad density pass finds where transmittance is spent.
        keep = valid
        weight_guess = None
        if cfg.transmittance_threshold > 0.0 and bool(valid.any()):
            with torch.no_grad():
                tau = torch.zeros(r, n, dtype=origins.dtype, device=dev)
                tau[valid] = field.density(points[valid]) * step
                trans = _exclusive_transmittance(tau)
                keep = valid & (trans > cfg.transmittance_threshold)
                weight_guess = (1.0 - torch.exp(-tau)) * trans

        # 4. Evaluate the kept samples with gradients and composite.
        index = keep.view(-1).nonzero().squeeze(1)  # (K,)
        x = points.view(-1, 3)[index]
        sigma, albedo = field(x)
        normals = None
        if shading.needs_normals:
            # Normals cost 4 field evaluations each: only where a sample will show.
            if weight_guess is None:
                normals = self._normals(field, x, sigma)
            else:
                visible = (weight_guess.view(-1)[index] > cfg.normal_weight_threshold).nonzero().squeeze(1)
                visible_normals = self._normals(field, x[visible], sigma[visible])
                normals = torch.zeros_like(x).index_copy(0, visible, visible_normals)
        ray_of = index // n
        cam = ray_camera[ray_of]
        color = shade(albedo, normals, shading.light[cam], shading.ambient[cam], shading.mode)

        tau = torch.zeros(r * n, dtype=sigma.dtype, device=dev).index_copy(0, index, sigma * step).view(r, n)
        weights = (1.0 - torch.exp(-tau)) * _exclusive_transmittance(tau)  # (R, N)
        w = weights.view(-1)[index]  # (K,)
        opacity = weights.sum(1)
        channels = color.shape[-1]  # 3 (RGB), or 4 for a field of Stable Diffusion latents
        rgb = torch.zeros(r, channels, dtype=sigma.dtype, device=dev).index_add(
            0, ray_of, w.unsqueeze(-1) * color
        )
        depth = torch.zeros(r, dtype=sigma.dtype, device=dev).index_add(0, ray_of, w * t.view(-1)[index])
        rgb = rgb + (1.0 - opacity).unsqueeze(-1) * background(dirs)

        normal_img = orientation = None
        if normals is not None:
            normal_img = torch.zeros(r, 3, dtype=sigma.dtype, device=dev).index_add(
                0, ray_of, w.unsqueeze(-1) * normals
            )
            facing_away = (normals * dirs[ray_of]).sum(-1).clamp(min=0.0) ** 2
            orientation = (w.detach() * facing_away).sum() / r
        return RenderOutput(rgb, opacity, depth, normal_img, orientation, int(index.numel()), candidates)

    def _normals(self, field: RadianceField, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.config.normals == "finite_difference":
            return field.normals(x, sigma)
        # The baseline: gradient of density with a graph kept for the second backward.
        training = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(field.density(xg).sum(), xg, create_graph=training)
        return -torch.nn.functional.normalize(grad, dim=-1, eps=1e-8)
