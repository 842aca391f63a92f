"""Fixtures for the Blender tests: a real Kiln server process on loopback with the test engine."""

from __future__ import annotations

import pytest

from tests.blender.bpy_harness import KilnServer


@pytest.fixture
def kiln_server(tmp_path):
    server = KilnServer(tmp_path / "server_data").start()
    yield server
    server.stop()
