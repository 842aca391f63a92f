"""The hash grid encoding against a brute-force trilinear interpolation."""

from __future__ import annotations

import itertools

import torch

from core.fields.hashgrid import _PRIMES, HashGridConfig, HashGridEncoding


def _reference_hashed(x: torch.Tensor, res: int, table: torch.Tensor) -> torch.Tensor:
    """Per point, per corner: Instant-NGP hash and trilinear weight, in plain Python."""
    out = torch.zeros(x.shape[0], table.shape[1], dtype=torch.float64)
    for n, p in enumerate(x.tolist()):
        pos = [c * res for c in p]
        base = [int(torch.floor(torch.tensor(c))) for c in pos]
        for corner in itertools.product((0, 1), repeat=3):
            v = [b + o for b, o in zip(base, corner, strict=True)]
            h = (v[0] * _PRIMES[0]) ^ (v[1] * _PRIMES[1]) ^ (v[2] * _PRIMES[2])
            w = 1.0
            for axis in range(3):
                f = pos[axis] - base[axis]
                w *= f if corner[axis] else 1.0 - f
            out[n] += w * table[h % table.shape[0]].double()
    return out


def test_hashed_level_matches_brute_force():
    torch.manual_seed(0)
    # A 2^6 table: every level above 3 cells per axis is hashed.
    enc = HashGridEncoding(HashGridConfig(levels=3, log2_table_size=6, base_resolution=5, max_resolution=20))
    assert enc._is_dense == [False, False, False]
    with torch.no_grad():
        for t in enc.hashed:
            t.uniform_(-1, 1)
    x = torch.rand(50, 3)
    feats = enc(x).double()
    for level, res in enumerate(enc.resolutions):
        expected = _reference_hashed(x, res, enc.hashed[level])
        assert torch.allclose(feats[:, 2 * level : 2 * level + 2], expected, atol=1e-6)


def test_dense_level_interpolates_vertices_and_midpoints():
    torch.manual_seed(0)
    enc = HashGridEncoding(HashGridConfig(levels=1, log2_table_size=12, base_resolution=4, max_resolution=4))
    assert enc._is_dense == [True]  # 5^3 = 125 vertices fit 4096 entries
    grid = enc.dense[0]
    with torch.no_grad():
        grid.uniform_(-1, 1)
    # Vertex (i, j, k) = (1, 2, 3) sits at x = i / 4; grid_sample indexes [z, y, x].
    x = torch.tensor([[0.25, 0.5, 0.75]])
    assert torch.allclose(enc(x)[0], grid[0, :, 3, 2, 1], atol=1e-6)
    # Halfway between two x-neighbours: their mean.
    mid = torch.tensor([[0.375, 0.5, 0.75]])
    assert torch.allclose(enc(mid)[0], (grid[0, :, 3, 2, 1] + grid[0, :, 3, 2, 2]) / 2, atol=1e-6)


def test_gradients_reach_only_touched_entries():
    enc = HashGridEncoding(HashGridConfig(levels=2, log2_table_size=6, base_resolution=5, max_resolution=9))
    x = torch.rand(3, 3)
    enc(x).sum().backward()
    for t in enc.hashed:
        touched = (t.grad.abs().sum(-1) > 0).sum().item()
        assert 1 <= touched <= 3 * 8  # at most 8 corners per point
