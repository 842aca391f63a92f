"""Fixtures: real Kiln servers on loopback, one shared and any number per test."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.harness import (
    FAST,
    PHOTO,
    SLOW,
    EngineCase,
    ServerProcess,
    private_tmp,
    shipped_avatar_model,
)


@pytest.fixture
def server_factory() -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with given args/env in a temp folder of their own; all stopped at teardown."""
    started: list[ServerProcess] = []
    tmp_path = private_tmp()

    def make(args: list[str] | None = None, env: dict[str, str] | None = None, **kw: Any) -> ServerProcess:
        server = ServerProcess(tmp_path / f"data{len(started)}", list(args or []), dict(env or {}), **kw)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_server() -> Iterator[ServerProcess]:
    """One server for the tests that need no restarts: slow, fast and a test photo engine."""
    tmp_path = private_tmp()
    server = ServerProcess(
        tmp_path / "data",
        ["--engine", SLOW, "--engine", FAST, "--engine", PHOTO, "--cancel-grace", "1.5"],
        {"KILN_SLOW_STEPS": "6", "KILN_SLOW_STEP_S": "0.25"},
    )
    server.start()
    yield server
    server.stop()
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture(scope="session")
def avatar_model() -> Iterator[Path]:
    """The avatar model folder: the shipped one, else one trained for seconds ("smoke" preset)."""
    model = shipped_avatar_model()
    if model is not None:
        yield model
        return
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from core.avatar.model import train

    tmp_path = private_tmp()
    cfg = train.preset("smoke")
    assert train.run("all", cfg, tmp_path / "train", 5.0, log=lambda msg: None)
    yield train.export(cfg, tmp_path / "train", tmp_path / "model").parent
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture(scope="session")
def avatar_server(avatar_model: Path) -> Iterator[ServerProcess]:
    """A server running the real avatar engine."""
    tmp_path = private_tmp()
    args = ["--avatar-weights", str(avatar_model), "--kinds", "avatar,photo_avatar"]
    server = ServerProcess(tmp_path / "data", args)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def engine_server(case: EngineCase, request: pytest.FixtureRequest) -> ServerProcess:
    """The server that runs ``case``'s engine."""
    return request.getfixturevalue(case.server)


@pytest.fixture
def client(shared_server: ServerProcess) -> Iterator[httpx.Client]:
    with shared_server.client() as c:
        yield c
