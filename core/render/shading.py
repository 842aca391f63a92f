"""DreamFusion shading: albedo, lambertian under a random light with ambient, and textureless."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from core.render.cameras import CameraBatch

ShadingMode = Literal["albedo", "lambertian", "textureless"]


@dataclass
class ShadingConfig:
    """How a shading is drawn per training step."""

    warmup_steps: int = 100
    """Steps at the start rendered with plain albedo (colour first, then shape)."""
    albedo_ratio: float = 0.2
    """After warm-up, chance of a plain albedo step."""
    textureless_ratio: float = 0.3
    """After warm-up, chance that a shaded step is textureless (white albedo) rather than lambertian."""
    ambient: tuple[float, float] = (0.1, 0.3)
    """Range of the ambient share of light in shaded steps."""
    light_jitter: float = 0.5
    """Standard deviation of the random offset of the light direction from the camera direction."""


@dataclass
class Shading:
    """One step's shading for B cameras."""

    mode: ShadingMode
    """How samples are coloured."""
    light: torch.Tensor
    """(B, 3) unit direction from the object towards the light."""
    ambient: torch.Tensor
    """(B,) ambient share of light in [0, 1]."""

    @property
    def needs_normals(self) -> bool:
        return self.mode != "albedo"


def albedo_shading(batch: int) -> Shading:
    """Plain albedo for ``batch`` cameras."""
    return Shading("albedo", torch.tensor([[0.0, 0.0, 1.0]]).expand(batch, 3).clone(), torch.ones(batch))


def sample_shading(
    config: ShadingConfig, step: int, cameras: CameraBatch, generator: torch.Generator
) -> Shading:
    """Draw the shading of a training step (always consumes the same random numbers, for resumes)."""
    b = len(cameras)
    u_mode, u_tex = torch.rand(2, generator=generator).tolist()
    jitter = torch.randn(b, 3, generator=generator) * config.light_jitter
    u_amb = torch.rand(b, generator=generator)
    if step < config.warmup_steps or u_mode < config.albedo_ratio:
        return albedo_shading(b)
    mode: ShadingMode = "textureless" if u_tex < config.textureless_ratio else "lambertian"
    light = F.normalize(F.normalize(cameras.position, dim=-1) + jitter, dim=-1)
    lo, hi = config.ambient
    return Shading(mode, light, lo + (hi - lo) * u_amb)


def shade(
    albedo: torch.Tensor,
    normals: torch.Tensor | None,
    light: torch.Tensor,
    ambient: torch.Tensor,
    mode: ShadingMode,
) -> torch.Tensor:
    """Colour of samples.

    Args:
        albedo: (K, 3) in [0, 1].
        normals: (K, 3) unit normals; needed unless ``mode == "albedo"``.
        light: (K, 3) unit light direction per sample.
        ambient: (K,) ambient share per sample.
        mode: the shading.

    Returns:
        (K, 3) colours: ``albedo * (ambient + (1 - ambient) * max(0, n . l))``, with albedo 1
        when textureless.
    """
    if mode == "albedo":
        return albedo
    if normals is None:
        raise ValueError(f"{mode} shading needs normals; render with need_normals=True")
    lambert = (normals * light).sum(-1).clamp(min=0.0)
    light_amount = (ambient + (1.0 - ambient) * lambert).unsqueeze(-1)
    base = torch.ones_like(albedo) if mode == "textureless" else albedo
    return base * light_amount
