"""One set of attributes from every source: the photo, the prompt's words, the explicit overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.avatar.vocab.attributes import ATTRIBUTE_NAMES, validate_partial

if TYPE_CHECKING:
    from core.avatar.reading.readings import PhotoReading

SOURCES = ("base", "photo", "prompt", "request")
"""Where an asked-for attribute came from, weakest first: later sources win. "base" is an earlier
avatar's attributes kept by a variant (``base_attributes``): whatever the prompt, the photo or
the request say differently wins over them."""


@dataclass(frozen=True)
class Resolved:
    """How a request was read.

    Attributes:
        attributes: the asked-for attributes, in ``ATTRIBUTE_NAMES`` order.
        sources: attribute -> "base", "photo", "prompt" or "request".
        confidences: attribute -> the photo reading's confidence, for attributes from the photo.
        unknown_words: prompt words the parser did not understand.
        conflicts: contradictions in the prompt and how they were resolved.
        notes: other remarks of the parser.
    """

    attributes: dict[str, str]
    sources: dict[str, str]
    confidences: dict[str, float] = field(default_factory=dict)
    unknown_words: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def resolve(
    prompt: str,
    overrides: dict[str, str] | None = None,
    photo_reading: PhotoReading | None = None,
    base: dict[str, str] | None = None,
) -> Resolved:
    """Merge ``base`` < the photo's confident readings < the prompt's words < explicit ``overrides``.

    The prompt's "...but with a red cap" overrides what the photo showed (or what the earlier
    avatar in ``base`` had), and attributes the request names explicitly override all of them.

    Raises:
        core.avatar.vocab.attributes.AttributeValueError: an override outside the vocabulary.
    """
    from core.avatar.vocab.prompt import parse_prompt

    explicit = validate_partial(dict(overrides or {}))
    kept = validate_partial(dict(base or {}))
    parsed = parse_prompt(prompt or "")
    photo = photo_reading.attributes() if photo_reading is not None else {}
    merged: dict[str, str] = {}
    sources: dict[str, str] = {}
    for source, values in zip(SOURCES, (kept, photo, parsed.attributes, explicit), strict=True):
        for name, value in values.items():
            merged[name], sources[name] = value, source
    ordered = [n for n in ATTRIBUTE_NAMES if n in merged]
    confidences = {
        n: float(photo_reading.readings[n].confidence)
        for n in ordered
        if sources[n] == "photo" and photo_reading is not None
    }
    return Resolved(
        attributes={n: merged[n] for n in ordered},
        sources={n: sources[n] for n in ordered},
        confidences=confidences,
        unknown_words=tuple(parsed.unknown_words),
        conflicts=tuple(parsed.conflicts),
        notes=tuple(getattr(parsed, "notes", ())),
    )
