"""Random orbit cameras around the object, their rays, and view-dependent prompt suffixes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

VIEW_NAMES = ("front", "side", "back", "overhead")
"""View directions in the order of ``CameraBatch.view``; prompts get ``", <name> view"``."""


@dataclass
class CameraConfig:
    """Ranges the training cameras are drawn from (uniformly)."""

    elevation_deg: tuple[float, float] = (-10.0, 45.0)
    """Elevation above the XY plane, degrees."""
    radius: tuple[float, float] = (1.6, 2.0)
    """Distance from the origin, metres (the object box is about 1 m across)."""
    fov_deg: tuple[float, float] = (40.0, 55.0)
    """Vertical field of view, degrees."""
    front_span_deg: float = 60.0
    """Total azimuth width of the "front" and "back" sectors; the rest is "side"."""
    overhead_deg: float = 60.0
    """Elevations above this are "overhead" whatever the azimuth."""


@dataclass
class CameraBatch:
    """B pinhole cameras looking at the origin with +Z up.

    Azimuth 0 looks from -Y (the asset's front) towards +Y; positive azimuth turns the
    camera towards +X.
    """

    position: torch.Tensor
    """(B, 3) camera centres, metres."""
    rotation: torch.Tensor
    """(B, 3, 3) camera-to-world rotation, columns right, up, backward (OpenGL convention)."""
    fov: torch.Tensor
    """(B,) vertical field of view, radians."""
    azimuth: torch.Tensor
    """(B,) radians in [0, 2 pi)."""
    elevation: torch.Tensor
    """(B,) radians."""
    view: torch.Tensor
    """(B,) long index into ``VIEW_NAMES``."""

    def __len__(self) -> int:
        return self.position.shape[0]


def orbit_cameras(
    azimuth: torch.Tensor,
    elevation: torch.Tensor,
    radius: torch.Tensor,
    fov: torch.Tensor,
    config: CameraConfig,
) -> CameraBatch:
    """Cameras on spheres around the origin; all args are (B,) tensors in radians / metres."""
    ce = torch.cos(elevation)
    position = torch.stack(
        (radius * ce * torch.sin(azimuth), -radius * ce * torch.cos(azimuth), radius * torch.sin(elevation)),
        -1,
    )
    backward = position / position.norm(dim=-1, keepdim=True)
    world_up = torch.tensor([0.0, 0.0, 1.0], dtype=position.dtype).expand_as(backward)
    right = torch.linalg.cross(world_up, backward, dim=-1)
    # Straight overhead the up vector is parallel to the view; any right vector will do there.
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    right = torch.where(degenerate, torch.tensor([1.0, 0.0, 0.0], dtype=position.dtype), right)
    right = right / right.norm(dim=-1, keepdim=True)
    up = torch.linalg.cross(backward, right, dim=-1)
    rotation = torch.stack((right, up, backward), dim=-1)
    return CameraBatch(
        position, rotation, fov, azimuth % (2 * math.pi), elevation, view_index(azimuth, elevation, config)
    )


def view_index(azimuth: torch.Tensor, elevation: torch.Tensor, config: CameraConfig) -> torch.Tensor:
    """Index into ``VIEW_NAMES`` for each camera: (B,), (B,) radians -> (B,) long."""
    az = torch.rad2deg(azimuth) % 360.0
    half = config.front_span_deg / 2.0
    view = torch.full_like(az, 1, dtype=torch.long)  # side
    view[(az < half) | (az >= 360.0 - half)] = 0
    view[(az >= 180.0 - half) & (az < 180.0 + half)] = 2
    view[torch.rad2deg(elevation) > config.overhead_deg] = 3
    return view


def sample_cameras(config: CameraConfig, batch: int, generator: torch.Generator) -> CameraBatch:
    """Draw ``batch`` random cameras from the ranges of ``config``."""

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(batch, generator=generator)

    azimuth = uniform(0.0, 2 * math.pi)
    elevation = torch.deg2rad(uniform(*config.elevation_deg))
    radius = uniform(*config.radius)
    fov = torch.deg2rad(uniform(*config.fov_deg))
    return orbit_cameras(azimuth, elevation, radius, fov, config)


def camera_rays(cameras: CameraBatch, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space rays through pixel centres, row 0 at the top of the image.

    Returns:
        origins (B, H, W, 3) and unit directions (B, H, W, 3).
    """
    tan_half = torch.tan(cameras.fov / 2.0).view(-1, 1, 1)  # (B, 1, 1)
    aspect = width / height
    ys = (1.0 - 2.0 * (torch.arange(height, dtype=torch.float32) + 0.5) / height).view(1, -1, 1)
    xs = (2.0 * (torch.arange(width, dtype=torch.float32) + 0.5) / width - 1.0).view(1, 1, -1)
    cam_x = (xs * tan_half * aspect).expand(-1, height, width)
    cam_y = (ys * tan_half).expand(-1, height, width)
    local = torch.stack((cam_x, cam_y, -torch.ones_like(cam_x)), dim=-1)  # (B, H, W, 3)
    dirs = torch.einsum("bij,bhwj->bhwi", cameras.rotation, local)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = cameras.position.view(-1, 1, 1, 3).expand_as(dirs)
    return origins, dirs
