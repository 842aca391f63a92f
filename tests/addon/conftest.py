"""Fixtures for the add-on's client tests: a scripted loopback HTTP server (see http_fixture.py)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest

from tests.addon.http_fixture import ScriptedServer, job_json


@pytest.fixture
def server():
    srv = ScriptedServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL on which nothing listens (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def make_job() -> Callable[..., dict[str, Any]]:
    """A job object as docs/API.md describes it; keyword arguments override fields."""
    return job_json
