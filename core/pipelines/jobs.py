"""The job contract: typed parameters, engine settings, the engine registry and ``run_job``.

Every default and range of a job request is defined here, once:

- ``OutputOptions`` and ``JobParams`` hold the request, each field with its default and, in its
  metadata, its range and a line of documentation. The server's pydantic schema is generated
  from these fields (``server/schemas.py``), and the add-on's ``protocol.py`` mirrors them and is
  tested against the server's OpenAPI schema.
- ``EngineSettings`` is what the operator configured (text model, avatar weights, threads,
  device); it travels from the server's config to the worker explicitly.
- ``ENGINES`` says which fields each kind reads. A field a kind does not read is refused when
  it is set to anything but its default, so nothing is silently dropped.

This module is import-light (no torch, no numpy): the server process imports it.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.progress import Reporter

PRESETS = ("draft", "standard", "high", "cpu")
"""Quality presets of the engines that read ``preset`` (text_to_3d): "draft" is a GPU draft,
"cpu" the same field in latent space without the VAE (about 2.6x faster a step on a CPU)."""
PROMPT_MAX_CHARS = 1000
"""Longest prompt or negative prompt; text encoders read far fewer tokens than this."""
SEED_MAX = 2**31 - 1
MAX_ATTRIBUTES = 32
"""Most attribute overrides in one request."""


PROGRESS_PREVIEW = "progress.png"
"""Where an engine keeps the latest image of a job in progress: ``work_dir / PROGRESS_PREVIEW``,
replaced whole (write a temporary file, then ``os.replace``). The server serves it at
``GET /v1/jobs/{id}/preview`` while the job runs; a finished job's ``preview.png`` artifact takes
its place."""


class JobError(Exception):
    """A job failed for a reason a person can act on; the message says what to do."""


def _spec(doc: str, **limits: Any) -> dict[str, Any]:
    """Field metadata: ``doc`` plus limits named as pydantic names them (ge, le, gt, max_length, choices)."""
    return {"doc": doc, **limits}


def field_spec(cls: type, name: str) -> dict[str, Any]:
    """The metadata (doc and limits) of field ``name`` of a contract dataclass."""
    return dict(next(f for f in dataclasses.fields(cls) if f.name == name).metadata)


def _check_number(cls: type, name: str, value: Any, integer: bool) -> None:
    spec = field_spec(cls, name)
    kinds = (int,) if integer else (int, float)
    if value is None and "nullable" in spec:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or value != value
        or abs(value) == float("inf")
    ):
        what = "an integer" if integer else "a finite number"
        raise JobError(f"{name} must be {what}, got {value!r}")
    lo, hi = spec.get("ge", spec.get("gt")), spec.get("le")
    if ("ge" in spec and value < lo) or ("gt" in spec and value <= lo) or (hi is not None and value > hi):
        low = f"{lo}" if "ge" in spec else f"above {lo}"
        raise JobError(f"{name} is {value}; use a value from {low} to {hi}")


@dataclass
class OutputOptions:
    """What to make from the finished field (the request's ``output``)."""

    resolution: int = field(default=128, metadata=_spec("Marching-cubes grid size per axis.", ge=64, le=512))
    texture_size: int = field(
        default=1024, metadata=_spec("Baked texture width and height in pixels.", ge=64, le=4096)
    )
    turntable_frames: int = field(
        default=36, metadata=_spec("Frames of the turntable video; 0 = no video.", ge=0, le=360)
    )
    turntable_size: int = field(
        default=256, metadata=_spec("Turntable video width and height in pixels.", ge=64, le=1024)
    )

    def check(self) -> OutputOptions:
        """Raise JobError naming the first field out of range; return self."""
        for f in dataclasses.fields(OutputOptions):
            _check_number(OutputOptions, f.name, getattr(self, f.name), integer=True)
        return self

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> OutputOptions:
        """Options from a request's ``output`` object; missing fields take their defaults."""
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise JobError(f"unknown output option {unknown[0]!r}; use {', '.join(sorted(names))}")
        return cls(**data).check()


@dataclass
class JobParams:
    """A job request, as every engine receives it (docs/API.md describes the same fields)."""

    prompt: str = field(default="", metadata=_spec("What to make.", max_length=PROMPT_MAX_CHARS))
    negative_prompt: str = field(default="", metadata=_spec("What to avoid.", max_length=PROMPT_MAX_CHARS))
    seed: int | None = field(
        default=None,
        metadata=_spec("Random seed; omitted = random, echoed back.", ge=0, le=SEED_MAX, nullable=True),
    )
    preset: str = field(default="draft", metadata=_spec("Quality and time preset.", choices=PRESETS))
    attributes: dict[str, str] = field(
        default_factory=dict,
        metadata=_spec("Avatar attribute overrides (GET /v1/info).", max_length=MAX_ATTRIBUTES),
    )
    base_attributes: dict[str, str] = field(
        default_factory=dict,
        metadata=_spec(
            "Avatar kinds: an earlier avatar's attributes to keep (a variant); the prompt, the photo "
            "and attributes win over them.",
            max_length=MAX_ATTRIBUTES,
        ),
    )
    guidance_scale: float | None = field(
        default=None,
        metadata=_spec("Classifier-free guidance; null = engine default.", gt=0, le=100, nullable=True),
    )
    variation: float | None = field(
        default=None,
        metadata=_spec(
            "How far each avatar strays from the mean look of its attributes "
            "(0 = the mean, 1 = a full sample); null = the model's default.",
            ge=0,
            le=1.5,
            nullable=True,
        ),
    )
    rig: bool = field(
        default=True,
        metadata=_spec(
            "Avatar kinds: rig the GLB (bones root, neck, head, jaw, eye_L, eye_R, skin weights and "
            "the expression shape keys); false = a bare mesh. Objects from text are never rigged."
        ),
    )
    output: OutputOptions = field(default_factory=OutputOptions, metadata=_spec("What to make of the field."))
    photo_path: str | None = field(
        default=None,
        metadata=_spec("Set by the server for photo jobs: the upload, relative to the job folder."),
    )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobParams:
        """Parameters from a stored or hand-written request; unknown keys are an error."""
        data = dict(data)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise JobError(f"unknown job parameter {unknown[0]!r}; use {', '.join(sorted(names))}")
        output = OutputOptions.from_dict(data.pop("output", None))
        params = cls(**data, output=output)
        params.check()
        return params

    def check(self) -> JobParams:
        """Raise JobError for a value out of its range (the server has already checked them)."""
        for name in ("prompt", "negative_prompt"):
            if len(getattr(self, name)) > PROMPT_MAX_CHARS:
                raise JobError(f"{name} is longer than {PROMPT_MAX_CHARS} characters; shorten it")
        _check_number(JobParams, "seed", self.seed, integer=True)
        _check_number(JobParams, "guidance_scale", self.guidance_scale, integer=False)
        _check_number(JobParams, "variation", self.variation, integer=False)
        if not isinstance(self.rig, bool):
            raise JobError(f"rig must be true or false, got {self.rig!r}")
        if self.preset not in PRESETS:
            raise JobError(f"unknown preset {self.preset!r}; use one of {', '.join(PRESETS)}")
        self.output.check()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


REQUEST_FIELDS = tuple(f.name for f in dataclasses.fields(JobParams) if f.name != "photo_path")
"""The fields a client may send (``photo_path`` is the server's)."""


def default_of(name: str) -> Any:
    """The default value of request field ``name``."""
    f = next(f for f in dataclasses.fields(JobParams) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def is_default(name: str, value: Any) -> bool:
    """Whether ``value`` of request field ``name`` is its default (an ``output`` dict compares field-wise)."""
    default = default_of(name)
    if name == "output" and isinstance(value, Mapping):
        return OutputOptions(**{**dataclasses.asdict(default), **value}) == default
    return value == default


@dataclass(frozen=True)
class EngineSettings:
    """How the operator set up the engines; the same for every job of a worker.

    Attributes:
        text_model: diffusers model of text_to_3d, a hub id or a local folder (None = the
            engine's default model).
        avatar_weights: folder with the avatar model's model.safetensors + model.json (None =
            the shipped model).
        threads: torch CPU threads (None = torch's default).
        device: "cuda", "cpu" or None (CUDA when available).
    """

    text_model: str | None = None
    avatar_weights: str | None = None
    threads: int | None = None
    device: str | None = None


@dataclass(frozen=True)
class EngineSpec:
    """One job kind: where its code is and which request fields it reads.

    Attributes:
        entry: "module:function" with the signature of ``run_job`` minus ``kind``.
        reads: request fields the engine uses; any other field must be left at its default.
        needs_prompt: a request without a prompt is refused (with ``prompt_hint`` as the example).
        takes_photo: the job is submitted as a photo upload (POST /v1/jobs/photo).
    """

    entry: str
    reads: frozenset[str] = frozenset(REQUEST_FIELDS)
    needs_prompt: bool = False
    prompt_hint: str = ""
    takes_photo: bool = False

    def refused_fields(self, request: Mapping[str, Any]) -> list[str]:
        """Fields of ``request`` this kind does not read but that are set to a non-default value."""
        return [
            n
            for n, v in request.items()
            if n in REQUEST_FIELDS and n not in self.reads and not is_default(n, v)
        ]

    def describe(self) -> dict[str, Any]:
        """The JSON form published in GET /v1/info."""
        return {
            "fields": sorted(self.reads),
            "needs_prompt": self.needs_prompt,
            "takes_photo": self.takes_photo,
        }


_AVATAR_FIELDS = frozenset(
    {"prompt", "seed", "attributes", "base_attributes", "guidance_scale", "variation", "rig", "output"}
)

ENGINES: dict[str, EngineSpec] = {
    "avatar": EngineSpec("core.pipelines.avatar:run_avatar_job", _AVATAR_FIELDS),
    "photo_avatar": EngineSpec(
        "core.pipelines.photo_avatar:run_photo_avatar_job", _AVATAR_FIELDS, takes_photo=True
    ),
    "text_to_3d": EngineSpec(
        "core.pipelines.text_to_3d:run_text_to_3d_job",
        frozenset({"prompt", "negative_prompt", "seed", "preset", "guidance_scale", "output"}),
        needs_prompt=True,
        prompt_hint="describe the object, e.g. 'a red ceramic teapot'",
    ),
}
"""kind -> its engine. Servers add kinds with ``--engine KIND=module:function`` (reading every field)."""


def engine_spec(kind: str, spec: EngineSpec | str) -> EngineSpec:
    """``spec`` as an EngineSpec: a plain "module:function" for a core kind keeps that kind's
    declaration (the fields it reads, photo or not) with other code; for a new kind it reads
    every request field."""
    if isinstance(spec, EngineSpec):
        return spec
    return dataclasses.replace(ENGINES[kind], entry=spec) if kind in ENGINES else EngineSpec(spec)


def register_engine(kind: str, spec: EngineSpec | str) -> None:
    """Add or replace a kind (see ``engine_spec``)."""
    ENGINES[kind] = engine_spec(kind, spec)


def check_request(
    kind: str, request: Mapping[str, Any], table: Mapping[str, EngineSpec] | None = None
) -> None:
    """Refuse what ``kind`` cannot run: an unknown kind, a missing prompt, a field it ignores.

    ``table`` is the engine registry to check against (default: ``ENGINES``).

    Raises:
        JobError: the message names the field and what to do.
    """
    table = ENGINES if table is None else table
    if kind not in table:
        raise JobError(f"unknown job kind {kind!r}; use one of {sorted(table)}")
    spec = table[kind]
    if spec.needs_prompt and not str(request.get("prompt") or "").strip():
        raise JobError(f"a {kind} job needs a prompt; {spec.prompt_hint or 'describe what to make'}")
    refused = spec.refused_fields(request)
    if refused:
        raise JobError(
            f"{kind} jobs do not read {', '.join(refused)}; leave {'them' if len(refused) > 1 else 'it'} out"
        )


EngineFn = Callable[[JobParams, Path, Reporter, EngineSettings], dict[str, Path]]


def run_job(
    kind: str,
    params: JobParams | Mapping[str, Any],
    work_dir: Path,
    reporter: Reporter,
    settings: EngineSettings | None = None,
) -> dict[str, Path]:
    """Run one job to completion.

    Args:
        kind: one of ``ENGINES``.
        params: the request (a ``JobParams``, or its dict form as the server stores it).
        work_dir: a folder owned by this job. Engines keep checkpoints under
            ``work_dir / "checkpoints"`` and resume from them when present, so a job
            restarted after a crash continues where it stopped.
        reporter: progress and cancellation (raises ``core.progress.Cancelled``).
        settings: the operator's engine settings (default: every engine's defaults).

    Returns:
        Artifact name (``asset.glb``, ``turntable.mp4``, ``preview.png``,
        ``attributes.json``) to the finished file's path inside ``work_dir``.
    """
    if kind not in ENGINES:
        raise JobError(f"unknown job kind {kind!r}; use one of {sorted(ENGINES)}")
    if not isinstance(params, JobParams):
        params = JobParams.from_dict(params)
    check_request(kind, dataclasses.asdict(params))
    module_name, func_name = ENGINES[kind].entry.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    work_dir.mkdir(parents=True, exist_ok=True)
    return func(params, work_dir, reporter, settings or EngineSettings())
