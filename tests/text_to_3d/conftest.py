"""Shared fixtures: one thread for torch, and a tiny random SD pipeline saved to disk once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random SD-shaped pipeline folder written with save_pretrained (no download)."""
    from core.guidance.tiny_sd import build_tiny_sd_pipeline

    return build_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny_sd") / "pipe")
