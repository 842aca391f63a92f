"""Prompt and/or attributes -> tri-plane diffusion -> tri-plane field -> the shared asset path."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.avatar.attributes import ATTRIBUTE_NAMES, AttributeValueError, validate_partial
from core.pipelines.jobs import JobError
from core.progress import Reporter


@dataclass(frozen=True)
class AvatarRequest:
    """What to generate.

    Attributes:
        prompt: free text; the parser reads attributes out of it.
        attributes: explicit attribute values; they win over the prompt.
        seed: the same seed and inputs give the same avatar.
        n: number of avatars.
        guidance_scale: classifier-free guidance (None = the model's default).
        steps: DDIM steps.
    """

    prompt: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    n: int = 1
    guidance_scale: float | None = None
    steps: int = 25


@dataclass
class AvatarResult:
    """Generated avatars and how the request was read.

    Attributes:
        planes: (n, 3, C, R, R) tri-planes.
        fields: one ``TriplaneField`` per avatar, for the asset path.
        attributes: the attributes the model was conditioned on (the rest varied with the seed).
        sources: attribute -> "prompt" or "request".
        unknown_words: prompt words the parser did not understand.
        conflicts: contradictions in the prompt and how they were resolved.
        notes: other remarks of the parser.
    """

    planes: torch.Tensor
    fields: list[Any]
    attributes: dict[str, str]
    sources: dict[str, str]
    unknown_words: list[str]
    conflicts: list[str]
    notes: list[str]


def resolve_attributes(
    prompt: str, overrides: dict[str, str] | None
) -> tuple[dict[str, str], dict[str, str], Any]:
    """Merge the prompt's attributes with explicit ``overrides`` (which win).

    Returns:
        (attributes, sources, parsed prompt).

    Raises:
        JobError: an override outside the vocabulary.
    """
    from core.avatar.prompt import parse_prompt

    try:
        explicit = validate_partial(dict(overrides or {}))
    except AttributeValueError as e:
        raise JobError(str(e)) from e
    parsed = parse_prompt(prompt or "")
    merged, sources = {}, {}
    for source, values in (("prompt", parsed.attributes), ("request", explicit)):
        for k, v in values.items():
            merged[k], sources[k] = v, source
    ordered = {k: merged[k] for k in ATTRIBUTE_NAMES if k in merged}
    return ordered, {k: sources[k] for k in ordered}, parsed


def avatar(
    request: AvatarRequest,
    reporter: Reporter | None = None,
    model: Any = None,
    planes: torch.Tensor | None = None,
) -> AvatarResult:
    """Generate avatars for ``request`` (no files written).

    Steps: 1. read the prompt and merge the explicit attributes; 2. load the model (the shipped
    one unless ``model`` is given); 3. sample tri-planes with DDIM (progress stage "sample"),
    unless ``planes`` from an earlier identical request are given.
    """
    from core.avatar.model import DEFAULT_GUIDANCE, ModelError, default_model

    reporter = reporter or Reporter()
    # 1. Attributes.
    attrs, sources, parsed = resolve_attributes(request.prompt, request.attributes)
    # 2. Model.
    if model is None:
        try:
            model = default_model()
        except ModelError as e:
            raise JobError(str(e)) from e
    # 3. Sample.
    scale = DEFAULT_GUIDANCE if request.guidance_scale is None else float(request.guidance_scale)
    reporter("sample", 0.0, "sampling tri-planes")

    def on_step(i: int, total: int) -> None:
        reporter("sample", (i + 1) / total, f"DDIM step {i + 1}/{total}")

    if planes is None:
        try:
            planes = model.generate(attrs, request.seed, request.n, scale, request.steps, on_step)
        except ValueError as e:
            raise JobError(str(e)) from e
    return AvatarResult(
        planes=planes,
        fields=[model.field(p) for p in planes],
        attributes=attrs,
        sources=sources,
        unknown_words=list(parsed.unknown_words),
        conflicts=list(parsed.conflicts),
        notes=list(getattr(parsed, "notes", [])),
    )


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def run_avatar_job(params: dict[str, Any], work_dir: Path, reporter: Reporter) -> dict[str, Path]:
    """The ``avatar`` job (see core/pipelines/jobs.py and docs/API.md).

    Steps: 1. generate the tri-planes (or reuse ``checkpoints/avatar_planes.pt`` from an
    interrupted run of the same request); 2. run the asset path on the tri-plane field;
    3. write ``attributes.json`` with the attributes used, words not understood and conflicts.
    """
    from core.assets import AssetOptions, build_asset

    out = dict(params.get("output") or {})
    options = AssetOptions(
        resolution=int(out.get("resolution", 128)),
        texture_size=int(out.get("texture_size", 1024)),
        turntable_frames=int(out.get("turntable_frames", 36)),
        turntable_size=int(out.get("turntable_size", 256)),
    )
    try:
        options.validate()
    except ValueError as e:
        raise JobError(str(e)) from e
    request = AvatarRequest(
        prompt=str(params.get("prompt") or ""),
        attributes=dict(params.get("attributes") or {}),
        seed=int(params.get("seed") or 0),
        guidance_scale=params.get("guidance_scale"),
    )

    # 1. Tri-planes, resumable.
    ckpt_dir = work_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt = ckpt_dir / "avatar_planes.pt"
    key = json.dumps(
        [request.prompt, request.attributes, request.seed, request.guidance_scale], sort_keys=True
    )
    saved = torch.load(ckpt, weights_only=False) if ckpt.exists() else {}
    # The sample is deterministic; reusing it just saves the sampling time on a resume.
    result = avatar(
        request, reporter.sub(0.0, 0.3), planes=saved.get("planes") if saved.get("key") == key else None
    )
    if saved.get("key") != key:
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"key": key, "planes": result.planes}, tmp)
        os.replace(tmp, ckpt)

    # 2. The asset path.
    asset = build_asset(result.fields[0], work_dir, options, reporter.sub(0.3, 0.97), name="avatar")

    # 3. attributes.json.
    _write_json_atomic(
        work_dir / "attributes.json",
        {
            "prompt": request.prompt,
            "attributes": result.attributes,
            "sources": result.sources,
            "unspecified": [n for n in ATTRIBUTE_NAMES if n not in result.attributes],
            "unknown_words": result.unknown_words,
            "conflicts": result.conflicts,
            "notes": result.notes,
            "seed": request.seed,
            "guidance_scale": request.guidance_scale,
            "stats": asset.stats,
        },
    )
    reporter("done", 1.0, "avatar ready")
    artifacts = {
        "asset.glb": asset.glb,
        "preview.png": asset.preview,
        "attributes.json": work_dir / "attributes.json",
    }
    if asset.video is not None:
        artifacts["turntable.mp4"] = asset.video
    return artifacts
