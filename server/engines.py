"""Which job kinds this server can run: the core engines plus any an admin registered."""

from __future__ import annotations

import importlib.util
import logging

from core.pipelines.jobs import ENGINES, EngineSpec, engine_spec

log = logging.getLogger("kiln.server")


def engine_table(extra: dict[str, str]) -> dict[str, EngineSpec]:
    """Core engines overlaid with admin-registered ones (``core.pipelines.jobs.engine_spec``)."""
    return {**ENGINES, **{kind: engine_spec(kind, target) for kind, target in extra.items()}}


def _module_present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False  # a missing parent package raises instead of returning None


def available_kinds(extra: dict[str, str], only: tuple[str, ...] = ()) -> list[str]:
    """Kinds whose engine module is installed, without importing it (the worker does that).

    Kinds whose module is missing are logged and left out, so a request for them
    gets a 422 naming the kinds that do work instead of a failed job.
    """
    kinds = []
    for kind, spec in sorted(engine_table(extra).items()):
        if only and kind not in only:
            continue
        module = spec.entry.partition(":")[0]
        if _module_present(module):
            kinds.append(kind)
        else:
            log.warning("engine %s unavailable: module %s is not installed", kind, module)
    return kinds
