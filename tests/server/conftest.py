"""Fixtures: real Kiln servers on loopback, one shared and any number per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.harness import FAST, PHOTO, SLOW, ServerProcess


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with given args/env in this test's temp folder; all stopped at teardown."""
    started: list[ServerProcess] = []

    def make(args: list[str] | None = None, env: dict[str, str] | None = None, **kw: Any) -> ServerProcess:
        server = ServerProcess(tmp_path / f"data{len(started)}", list(args or []), dict(env or {}), **kw)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the tests that need no restarts: slow, fast and a test photo engine."""
    server = ServerProcess(
        tmp_path_factory.mktemp("shared") / "data",
        ["--engine", SLOW, "--engine", FAST, "--engine", PHOTO, "--cancel-grace", "1.5"],
        {"KILN_SLOW_STEPS": "6", "KILN_SLOW_STEP_S": "0.25"},
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(shared_server: ServerProcess) -> Iterator[httpx.Client]:
    with shared_server.client() as c:
        yield c
