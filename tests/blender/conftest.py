"""Fixtures for the Blender tests: a real Kiln server process on loopback with the test engine."""

from __future__ import annotations

import os

import pytest

from tests.blender.bpy_harness import KilnServer


@pytest.fixture
def kiln_server(tmp_path):
    # KILN_TEST_AVATAR_WEIGHTS=DIR runs the avatar test with other weights (e.g. a smoke-trained model).
    weights = os.environ.get("KILN_TEST_AVATAR_WEIGHTS")
    extra = ("--avatar-weights", weights) if weights else ()
    server = KilnServer(tmp_path / "server_data", extra_args=extra).start()
    yield server
    server.stop()
