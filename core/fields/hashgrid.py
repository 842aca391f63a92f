"""Multi-resolution hash grid encoding (Instant-NGP style) in plain PyTorch, no CUDA extension."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Spatial hash primes from Teschner et al. 2003, as Instant-NGP uses; the first is 1 so that
# neighbouring cells along x stay coherent in memory.
_PRIMES = (1, 2654435761, 805459861)


@dataclass
class HashGridConfig:
    """Shape of a multi-resolution hash grid encoding."""

    levels: int = 6
    """How many resolution levels; each adds ``features`` channels to the encoding."""
    features: int = 2
    """Feature channels stored per grid vertex and level."""
    log2_table_size: int = 17
    """Entries per hashed level are ``2**log2_table_size``; coarser levels that fit are stored densely."""
    base_resolution: int = 8
    """Cells per axis of the coarsest level."""
    max_resolution: int = 64
    """Cells per axis of the finest level; the growth factor between levels follows from it."""
    init_scale: float = 1e-4
    """Uniform init range of the tables; small so the field starts as its density blob."""


class HashGridEncoding(nn.Module):
    """Maps points in [0, 1]^3 to concatenated trilinear features of every level.

    Levels whose vertex count fits in the table are stored densely and sampled with
    ``grid_sample`` (one fused C++ kernel with a cheap backward); finer levels are
    hashed, with the 8 corners gathered in one vectorised ``index_select``.

    Example::

        enc = HashGridEncoding(HashGridConfig(levels=4, max_resolution=64))
        feats = enc(torch.rand(1000, 3))  # (1000, 8)
    """

    def __init__(self, config: HashGridConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        growth = math.exp((math.log(c.max_resolution) - math.log(c.base_resolution)) / max(c.levels - 1, 1))
        table = 2**c.log2_table_size
        self.resolutions: list[int] = [
            int(math.floor(c.base_resolution * growth**i)) for i in range(c.levels)
        ]
        self.dense = nn.ParameterList()
        self.hashed = nn.ParameterList()
        self._is_dense: list[bool] = []
        for res in self.resolutions:
            verts = res + 1
            if verts**3 <= table:
                # grid_sample wants (1, C, D, H, W) with W indexed by x.
                grid = torch.empty(1, c.features, verts, verts, verts).uniform_(-c.init_scale, c.init_scale)
                self.dense.append(nn.Parameter(grid))
                self._is_dense.append(True)
            else:
                self.hashed.append(
                    nn.Parameter(torch.empty(table, c.features).uniform_(-c.init_scale, c.init_scale))
                )
                self._is_dense.append(False)
        corners = torch.tensor(
            [[(i >> 0) & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], dtype=torch.long
        )
        self.register_buffer("_corners", corners, persistent=False)
        self.register_buffer("_primes", torch.tensor(_PRIMES, dtype=torch.long), persistent=False)

    @property
    def out_dim(self) -> int:
        return self.config.levels * self.config.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode points.

        Args:
            x: (N, 3) points in [0, 1]^3 (values outside are clamped).

        Returns:
            (N, levels * features) features, coarsest level first.
        """
        x = x.clamp(0.0, 1.0)
        outs = []
        dense_i = hashed_i = 0
        grid_coords = None
        for res, is_dense in zip(self.resolutions, self._is_dense, strict=True):
            if is_dense:
                if grid_coords is None:
                    # align_corners=True maps -1/+1 onto the first/last vertex: x in [0,1] -> [-1,1].
                    grid_coords = (x * 2.0 - 1.0).view(1, 1, 1, -1, 3)
                feats = F.grid_sample(
                    self.dense[dense_i],
                    grid_coords,
                    mode="bilinear",
                    align_corners=True,
                    padding_mode="border",
                )
                outs.append(feats.view(self.config.features, -1).t())
                dense_i += 1
            else:
                outs.append(self._hashed_level(x, res, self.hashed[hashed_i]))
                hashed_i += 1
        return torch.cat(outs, dim=-1)

    def _hashed_level(self, x: torch.Tensor, res: int, table: torch.Tensor) -> torch.Tensor:
        """Trilinear interpolation of one hashed level: (N, 3) -> (N, features)."""
        n = x.shape[0]
        pos = x * res
        base = pos.floor()
        frac = pos - base  # (N, 3)
        # Per-axis hashes and weights of the two neighbouring vertices, (N, 3, 2); the 8
        # corners are their outer xor / product, ordered z, y, x (corner index x + 2y + 4z).
        offsets = self._corners[:2, 0]  # [0, 1]
        axis_hash = (base.long().unsqueeze(-1) + offsets) * self._primes.view(1, 3, 1)
        index = (
            axis_hash[:, 2, :, None, None] ^ axis_hash[:, 1, None, :, None] ^ axis_hash[:, 0, None, None, :]
        )
        index = (index & (table.shape[0] - 1)).view(-1)  # table size is a power of 2
        axis_w = torch.stack((1.0 - frac, frac), dim=-1)  # (N, 3, 2)
        w = axis_w[:, 2, :, None, None] * axis_w[:, 1, None, :, None] * axis_w[:, 0, None, None, :]
        feats = table.index_select(0, index).view(n, 8, table.shape[1])
        return (feats * w.view(n, 8, 1)).sum(1)
