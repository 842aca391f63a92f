"""Backgrounds behind the object: a fixed colour, or a small network of the view direction."""

from __future__ import annotations

import torch
from torch import nn


class FixedBackground(nn.Module):
    """The same colour for every ray."""

    def __init__(self, color: tuple[float, ...] = (1.0, 1.0, 1.0)) -> None:
        super().__init__()
        self.register_buffer("color", torch.tensor(color, dtype=torch.float32))

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        """(R, 3) ray directions -> (R, C) colours (C: the colour's length, 3 or 4 latent channels)."""
        return self.color.expand(dirs.shape[0], -1)


class MLPBackground(nn.Module):
    """DreamFusion's learned environment: sin/cos of the ray direction -> small MLP -> RGB."""

    def __init__(
        self, frequencies: int = 4, hidden: int = 16, channels: int = 3, latent: bool = False
    ) -> None:
        super().__init__()
        self.frequencies = frequencies
        self.latent = latent  # unbounded outputs (SD latents, channels 4), not sigmoid colours
        self.mlp = nn.Sequential(
            nn.Linear(3 + 6 * frequencies, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        """(R, 3) unit ray directions -> (R, channels) colours in [0, 1] (or latents)."""
        scales = 2.0 ** torch.arange(self.frequencies, dtype=dirs.dtype, device=dirs.device)
        angles = (dirs.unsqueeze(-1) * scales).flatten(1)  # (R, 3F)
        out = self.mlp(torch.cat((dirs, torch.sin(angles), torch.cos(angles)), -1))
        return out if self.latent else torch.sigmoid(out)


class RandomSolidBackground(nn.Module):
    """One random solid colour per camera, drawn each training step (threestudio's random
    background augmentation): the object cannot hide in a learned backdrop or in fog."""

    def __init__(self, colors: torch.Tensor, ray_camera: torch.Tensor) -> None:
        super().__init__()
        self.ray_colors = colors[ray_camera]  # (R, 3)

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        """(R, 3) ray directions -> (R, 3) colours of their cameras."""
        return self.ray_colors.to(dirs)
