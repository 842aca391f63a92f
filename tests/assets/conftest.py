"""Shared small assets for the asset-path tests (built once per session to keep the suite fast)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from core.assets.cleanup import clean_mesh
from core.assets.mesh import Mesh, extract_mesh
from core.assets.texture import TexturedMesh, texture_mesh
from core.fields.analytic import TwoToneSphereField

REPO = Path(__file__).resolve().parents[2]
VALIDATOR = REPO / "tools" / "validate_gltf.mjs"
TOP = np.array([0.9, 0.1, 0.1], np.float32)
BOTTOM = np.array([0.1, 0.2, 0.9], np.float32)


@pytest.fixture(scope="session")
def two_tone() -> TwoToneSphereField:
    """Radius 0.5 sphere centred at z = 0.5: red above z = 0.5, blue below."""
    return TwoToneSphereField(0.5, (0.0, 0.0, 0.5), tuple(TOP), tuple(BOTTOM))


@pytest.fixture(scope="session")
def two_tone_mesh(two_tone) -> Mesh:
    mesh, _ = clean_mesh(extract_mesh(two_tone, 64))
    return mesh


@pytest.fixture(scope="session")
def two_tone_textured(two_tone, two_tone_mesh) -> TexturedMesh:
    return texture_mesh(two_tone, two_tone_mesh, 256)


@pytest.fixture
def top_colour() -> np.ndarray:
    return TOP


@pytest.fixture
def bottom_colour() -> np.ndarray:
    return BOTTOM


@pytest.fixture
def validate_glb():
    """Callable: path -> CompletedProcess of tools/validate_gltf.mjs (skips without node/validator)."""
    command = validator_command()

    def run(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=120)

    return run


def validator_command() -> list[str]:
    """The node command that runs the Khronos validator, or skip with the reason."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed; the glTF validator test needs Node.js 18+")
    if not (REPO / "node_modules" / "gltf-validator").is_dir():
        pytest.skip("node_modules/gltf-validator is missing: run `npm ci` in the repository root")
    return [node, str(VALIDATOR)]
