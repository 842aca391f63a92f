"""Photo -> avatar: read the face into attributes, then generate through the avatar pipeline."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.avatar.reading import MIN_CONFIDENCE, PhotoReading, read_photo
from core.avatar.reading.photo import PhotoError
from core.avatar.vocab.attributes import AttributeValueError, validate_partial
from core.pipelines.jobs import JobError
from core.progress import Reporter


@dataclass(frozen=True)
class PhotoAvatarPlan:
    """What the photo job hands to the avatar pipeline, and where each attribute came from.

    Attributes:
        reading: everything read from the photo, with confidences.
        attributes: the merged partial attributes: photo < prompt words < explicit request.
        sources: attribute name -> "photo", "prompt" or "request".
        prompt_notes: words of the prompt the parser did not understand, and conflicts.
    """

    reading: PhotoReading
    attributes: dict[str, str]
    sources: dict[str, str]
    prompt_notes: tuple[str, ...] = ()


def plan_photo_avatar(
    photo: bytes | str | Path, prompt: str = "", attributes: dict[str, str] | None = None
) -> PhotoAvatarPlan:
    """Read ``photo`` and merge it with prompt words and explicit attributes.

    Later sources win: the prompt's "...but with a red cap" overrides what the photo showed,
    and attributes the request names explicitly override both.

    Raises:
        PhotoError: unusable photo or no face (nothing is written).
        AttributeValueError: an explicit attribute outside the vocabulary.
    """
    from core.avatar.vocab.prompt import parse_prompt

    explicit = validate_partial(dict(attributes or {}))
    reading = read_photo(photo)
    parsed = parse_prompt(prompt or "")
    merged: dict[str, str] = {}
    sources: dict[str, str] = {}
    for source, values in (
        ("photo", reading.attributes()),
        ("prompt", parsed.attributes),
        ("request", explicit),
    ):
        for name, value in values.items():
            merged[name] = value
            sources[name] = source
    notes = [f"prompt word not understood: {w!r}" for w in parsed.unknown_words] + list(parsed.conflicts)
    return PhotoAvatarPlan(reading, merged, sources, tuple(notes))


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False))
    os.replace(tmp, path)


def run_photo_avatar_job(params: dict[str, Any], work_dir: Path, reporter: Reporter) -> dict[str, Path]:
    """The ``photo_avatar`` job: photo (``params["photo_path"]``) + optional prompt -> avatar asset.

    ``photo_path`` is absolute or relative to ``work_dir`` (where the server stores uploads).

    Steps: 1. read the photo and merge attributes (nothing is written if this fails);
    2. run the avatar job with the merged attributes as overrides; 3. write ``attributes.json``
    with what was read, each confidence, and where every used attribute came from.

    Returns:
        The avatar job's artifacts (``asset.glb``, ``preview.png``, ``turntable.mp4`` ...) plus
        ``attributes.json``.
    """
    # 1. Read the photo.
    photo_path = params.get("photo_path")
    if not photo_path:
        raise JobError("a photo_avatar job needs a photo; upload one with POST /v1/jobs/photo")
    # The server stores uploads inside the job folder; a relative path is relative to it.
    path = Path(photo_path)
    if not path.is_absolute():
        path = work_dir / path
    read_reporter = reporter.sub(0.0, 0.05)
    read_reporter("read_photo", 0.0, "finding the face in the photo")
    try:
        plan = plan_photo_avatar(path, params.get("prompt") or "", params.get("attributes"))
    except (PhotoError, AttributeValueError) as e:
        raise JobError(str(e)) from e
    used = ", ".join(f"{n}={v}" for n, v in plan.reading.attributes().items()) or "nothing confidently"
    read_reporter("read_photo", 1.0, f"read from the photo: {used}")

    # 2. Generate with the avatar pipeline.
    try:
        from core.pipelines.avatar import run_avatar_job
    except ImportError as e:
        raise JobError(f"the avatar pipeline is not available ({e}); check the Kiln install") from e
    avatar_params = {k: v for k, v in params.items() if k != "photo_path"}
    avatar_params["attributes"] = dict(plan.attributes)
    artifacts = dict(run_avatar_job(avatar_params, work_dir, reporter.sub(0.05, 1.0)))

    # 3. attributes.json: keep what the avatar job wrote (the attributes used) and add the photo's.
    out = work_dir / "attributes.json"
    record: dict[str, Any] = {}
    if out.is_file():
        try:
            record = json.loads(out.read_text())
        except json.JSONDecodeError:
            record = {}
    record["requested"] = plan.attributes
    record["sources"] = plan.sources
    record["photo"] = plan.reading.to_json(MIN_CONFIDENCE)
    if plan.prompt_notes:
        record["prompt_notes"] = list(plan.prompt_notes)
    _write_json_atomic(out, record)
    artifacts["attributes.json"] = out
    return artifacts
