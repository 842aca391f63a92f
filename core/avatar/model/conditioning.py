"""Attribute conditioning: one embedding table per attribute, each with its own null token.

A condition is an (A,) int64 vector in ``ATTRIBUTE_NAMES`` order; entry ``a`` is the value's
index in ``VOCAB[name_a]`` or ``null_index(a) == len(VOCAB[name_a])`` when the attribute is
unspecified. Training replaces attributes by their null token at random, so at sampling time
an unspecified attribute varies with the seed instead of collapsing to one value.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from core.avatar.vocab.attributes import ATTRIBUTE_NAMES, VOCAB, validate_partial

VOCAB_SIZES: tuple[int, ...] = tuple(len(VOCAB[n]) for n in ATTRIBUTE_NAMES)
"""Number of values of each attribute, in ``ATTRIBUTE_NAMES`` order."""


def null_indices() -> np.ndarray:
    """The all-unspecified condition -> (A,) int64."""
    return np.array(VOCAB_SIZES, dtype=np.int64)


def condition_from_partial(values: Mapping[str, str]) -> np.ndarray:
    """Condition vector of a partial attribute dict (unknown names or values raise) -> (A,) int64."""
    validate_partial(dict(values))
    idx = null_indices()
    for a, name in enumerate(ATTRIBUTE_NAMES):
        if name in values:
            idx[a] = VOCAB[name].index(values[name])
    return idx


def partial_from_condition(idx: np.ndarray) -> dict[str, str]:
    """Inverse of ``condition_from_partial``: the specified attributes of a condition."""
    return {
        n: VOCAB[n][int(i)] for n, i, k in zip(ATTRIBUTE_NAMES, idx, VOCAB_SIZES, strict=True) if int(i) < k
    }


def drop_conditions(
    idx: torch.Tensor, attr_drop: float, all_drop: float, gen: torch.Generator
) -> torch.Tensor:
    """Replace entries of ``idx`` (B, A) by null tokens: each with ``attr_drop``, whole rows with ``all_drop``."""
    B, A = idx.shape
    nulls = torch.tensor(VOCAB_SIZES[:A], dtype=idx.dtype).expand(B, A)
    drop = torch.rand(B, A, generator=gen) < attr_drop
    drop |= (torch.rand(B, 1, generator=gen) < all_drop).expand(B, A)
    return torch.where(drop, nulls, idx)


class AttributeEncoder(nn.Module):
    """Condition (B, A) int64 -> embedding (B, dim).

    Each attribute has a table of ``len(values) + 1`` rows (the last is its null token); the
    attribute embeddings are summed and passed through a small MLP, so attributes combine
    without an order.
    """

    def __init__(self, dim: int, n_attributes: int | None = None) -> None:
        """``n_attributes``: condition on the first n of ``ATTRIBUTE_NAMES`` (a model trained
        before later attributes were appended); None = all."""
        super().__init__()
        # Unit-variance embeddings (PyTorch's default): the shipped CPU model started them at
        # std 0.02 and learned attribute effects far weaker than the seed's (|dx| 3 vs 24);
        # a strong initial signal makes conditioning compete from the first steps.
        sizes = VOCAB_SIZES if n_attributes is None else VOCAB_SIZES[:n_attributes]
        self.tables = nn.ModuleList([nn.Embedding(k + 1, dim) for k in sizes])
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.dim() != 2 or idx.shape[1] != len(self.tables):
            raise ValueError(f"condition must be (B, {len(self.tables)}) int64, got {tuple(idx.shape)}")
        e = sum(t(idx[:, a]) for a, t in enumerate(self.tables))
        return self.mlp(e)
