"""``attributes.json``: how an avatar request was read and what the avatar was made with (docs/API.md).

Both avatar kinds write this one shape, through ``AvatarRecord.write``:

- ``attributes``: the asked-for attributes; ``sources``: "base", "photo", "prompt" or "request" for each;
  ``confidences``: the photo reading's confidence for those from the photo;
- ``unspecified``: the attributes nobody asked for; ``drawn``: what the seed chose for them;
- ``unknown_words``, ``conflicts``, ``notes``: the prompt parser's remarks;
- ``photo``: the whole photo reading (every reading with its confidence, warnings), or null;
- ``prompt``, ``seed``, ``guidance_scale``, ``variation``: the request; ``stats``: the asset's figures.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.avatar.vocab.attributes import ATTRIBUTE_NAMES
from core.avatar.vocab.resolve import Resolved

RECORD_NAME = "attributes.json"


def drawn_attributes(asked: dict[str, str], completed: dict[str, str]) -> dict[str, str]:
    """The attributes the seed chose, for people: a hat colour is left out when no hat was drawn."""
    drawn = {k: v for k, v in completed.items() if k not in asked}
    if completed.get("headwear") == "none":
        drawn.pop("headwear_color", None)
    return drawn


@dataclass(frozen=True)
class AvatarRecord:
    """The contents of ``attributes.json`` (field meanings: the module docstring)."""

    prompt: str
    attributes: dict[str, str]
    sources: dict[str, str]
    confidences: dict[str, float]
    unspecified: list[str]
    drawn: dict[str, str]
    unknown_words: list[str]
    conflicts: list[str]
    notes: list[str]
    seed: int
    guidance_scale: float | None
    variation: float | None
    photo: dict[str, Any] | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        prompt: str,
        resolved: Resolved,
        completed: dict[str, str],
        seed: int,
        guidance_scale: float | None,
        variation: float | None,
        photo: dict[str, Any] | None = None,
        stats: dict[str, Any] | None = None,
    ) -> AvatarRecord:
        """The record of one avatar: ``completed`` is the full set it was conditioned on."""
        return cls(
            prompt=prompt,
            attributes=dict(resolved.attributes),
            sources=dict(resolved.sources),
            confidences={k: round(v, 3) for k, v in resolved.confidences.items()},
            unspecified=[n for n in ATTRIBUTE_NAMES if n not in resolved.attributes],
            drawn=drawn_attributes(resolved.attributes, completed),
            unknown_words=list(resolved.unknown_words),
            conflicts=list(resolved.conflicts),
            notes=list(resolved.notes),
            seed=seed,
            guidance_scale=guidance_scale,
            variation=variation,
            photo=photo,
            stats=dict(stats or {}),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, folder: Path) -> Path:
        """Write ``folder/attributes.json`` atomically and return its path."""
        path = Path(folder) / RECORD_NAME
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2))
        os.replace(tmp, path)
        return path
