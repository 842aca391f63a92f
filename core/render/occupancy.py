"""An occupancy grid over the object box, refreshed from the field during training to skip empty space."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class OccupancyConfig:
    """How the occupancy grid is kept."""

    enabled: bool = True
    """False renders every sample in the box (the plain-NeRF baseline)."""
    resolution: int = 32
    """Cells per axis."""
    decay: float = 0.8
    """Each refresh keeps ``max(decay * old, new)`` density, so cells empty out over a few refreshes."""
    alpha_threshold: float = 0.01
    """A cell is occupied when a ray step through it would absorb at least this much light."""
    update_every: int = 8
    """Training steps between refreshes."""
    warmup_steps: int = 16
    """Steps at the start during which every cell counts as occupied."""


class OccupancyGrid:
    """A (R, R, R) density grid over [-bound, bound]^3 and its boolean occupancy.

    The mask is dilated by one cell so surfaces can grow into neighbouring empty cells.
    """

    def __init__(self, config: OccupancyConfig, bound: float) -> None:
        self.config = config
        self.bound = bound
        r = config.resolution
        self.density = torch.zeros(r, r, r)
        self.mask = torch.ones(r, r, r, dtype=torch.bool)
        self.updates = 0

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {"density": self.density.clone(), "mask": self.mask.clone(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, torch.Tensor | int]) -> None:
        self.density = state["density"].clone().to(self.density.device)  # type: ignore[union-attr]
        self.mask = state["mask"].clone().to(self.mask.device)  # type: ignore[union-attr]
        self.updates = int(state["updates"])

    @torch.no_grad()
    def update(
        self,
        density_fn: Callable[[torch.Tensor], torch.Tensor],
        step_size: float,
        step: int,
        generator: torch.Generator,
    ) -> None:
        """Re-evaluate density at one jittered point per cell and rebuild the mask.

        Args:
            density_fn: (N, 3) metres -> (N,) density.
            step_size: the renderer's ray step in metres, to turn the alpha threshold into density.
            step: the training step (cells stay all occupied during warm-up).
            generator: random source of the jitter.
        """
        r = self.config.resolution
        idx = torch.stack(torch.meshgrid(*[torch.arange(r)] * 3, indexing="ij"), -1).view(-1, 3).float()
        jitter = torch.rand(idx.shape, generator=generator)
        points = (((idx + jitter) / r * 2.0 - 1.0) * self.bound).to(self.density.device)
        new = torch.cat([density_fn(c) for c in points.split(65536)]).view(r, r, r).float()
        # alpha = 1 - exp(-sigma * step) >= threshold  <=>  sigma >= -log(1 - threshold) / step.
        threshold = -torch.log1p(torch.tensor(-self.config.alpha_threshold)).item() / step_size
        # Capping what is stored keeps the decay meaningful: a cell that held a density of 1000
        # would otherwise stay "occupied" for dozens of refreshes after it emptied.
        new = new.clamp(max=8.0 * threshold)
        self.density = torch.maximum(self.density * self.config.decay, new)
        self.updates += 1
        if step < self.config.warmup_steps:
            self.mask = torch.ones_like(self.mask)
            return
        occupied = (self.density >= threshold).float()
        self.mask = F.max_pool3d(occupied[None, None], 3, stride=1, padding=1)[0, 0] > 0

    def to(self, device: torch.device | str) -> OccupancyGrid:
        """Move the grid to ``device`` (in place); returns self."""
        self.density = self.density.to(device)
        self.mask = self.mask.to(device)
        return self

    def lookup(self, points: torch.Tensor) -> torch.Tensor:
        """Whether each point lies in an occupied cell: (..., 3) metres -> (...) bool (False outside)."""
        r = self.config.resolution
        cell = ((points / self.bound + 1.0) * 0.5 * r).floor().long()
        inside = ((cell >= 0) & (cell < r)).all(-1)
        cell = cell.clamp(0, r - 1)
        flat = (cell[..., 0] * r + cell[..., 1]) * r + cell[..., 2]
        return inside & self.mask.view(-1)[flat]

    @property
    def occupied_fraction(self) -> float:
        return float(self.mask.float().mean())
