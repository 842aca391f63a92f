"""Request and response models of the HTTP API (docs/API.md); ranges here are the validation."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from core.pipelines import jobs as contract

PROMPT_MAX_CHARS = contract.PROMPT_MAX_CHARS
PRESETS = contract.PRESETS


def _encodable(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (it holds an unpaired surrogate escape)") from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]


def _attribute_vocab() -> dict[str, tuple[str, ...]] | None:
    """The avatar attribute vocabulary, or None when the avatar engine is not installed."""
    try:
        from core.avatar.vocab.attributes import VOCAB
    except ImportError:
        return None
    return VOCAB


def _field(cls: type, name: str, **extra: Any) -> Any:
    """A pydantic Field with the contract's default, limits and description for ``cls.name``."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    spec = dict(f.metadata)
    limits = {k: spec[k] for k in ("ge", "le", "gt", "max_length") if k in spec}
    if f.default_factory is not dataclasses.MISSING:
        default = {"default_factory": f.default_factory}
    else:
        default = {"default": f.default}
    floats = {"allow_inf_nan": False} if f.type in ("float | None", "float") else {}
    return Field(**default, **limits, **floats, description=spec.get("doc", ""), **extra)


class OutputOptions(BaseModel):
    """What to make from the finished field (core.pipelines.jobs.OutputOptions)."""

    model_config = ConfigDict(extra="forbid")

    resolution: int = _field(contract.OutputOptions, "resolution")
    texture_size: int = _field(contract.OutputOptions, "texture_size")
    turntable_frames: int = _field(contract.OutputOptions, "turntable_frames")
    turntable_size: int = _field(contract.OutputOptions, "turntable_size")


Preset = Literal[contract.PRESETS]  # type: ignore[valid-type]


class JobParams(BaseModel):
    """Everything a job request holds except its kind (core.pipelines.jobs.JobParams)."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field("", description="Job kind; see GET /v1/info for the kinds this server runs.")
    prompt: Text = _field(contract.JobParams, "prompt", validate_default=True)
    negative_prompt: Text = _field(contract.JobParams, "negative_prompt")
    seed: StrictInt | None = _field(contract.JobParams, "seed")
    preset: Preset = _field(contract.JobParams, "preset")
    attributes: dict[Annotated[Text, Field(max_length=64)], Annotated[Text, Field(max_length=64)]] = _field(
        contract.JobParams, "attributes"
    )
    base_attributes: dict[Annotated[Text, Field(max_length=64)], Annotated[Text, Field(max_length=64)]] = (
        _field(contract.JobParams, "base_attributes")
    )
    guidance_scale: float | None = _field(contract.JobParams, "guidance_scale")
    variation: float | None = _field(contract.JobParams, "variation")
    rig: StrictBool = _field(contract.JobParams, "rig")
    output: OutputOptions = Field(default_factory=OutputOptions)

    @field_validator("attributes", "base_attributes")
    @classmethod
    def _known_attributes(cls, attributes: dict[str, str]) -> dict[str, str]:
        vocab = _attribute_vocab()
        if vocab is None:
            return attributes
        for name, value in attributes.items():
            if name not in vocab:
                raise ValueError(f"unknown avatar attribute {name!r}; known attributes: {', '.join(vocab)}")
            if value not in vocab[name]:
                raise ValueError(f"attribute {name} must be one of {', '.join(vocab[name])}, not {value!r}")
        return attributes


def job_request_model(
    kinds: list[str], table: dict[str, contract.EngineSpec] | None = None
) -> type[JobParams]:
    """The job body for ``kinds``, checked against their engines' rules (``table``, default the core's).

    The rules: a kind that needs a prompt gets one, and a field the kind does not read is left out
    or at its default.
    """
    kind_type = Literal[tuple(kinds)] if kinds else Literal["none"]  # type: ignore[valid-type]
    engines = dict(contract.ENGINES if table is None else table)

    def fits_the_kind(self: JobParams) -> JobParams:
        spec = engines.get(self.kind)
        if spec is None:
            return self
        if spec.needs_prompt and not self.prompt.strip():
            raise PydanticCustomError(
                "prompt_missing",
                "a {kind} job needs a prompt; {hint}",
                {"kind": self.kind, "hint": spec.prompt_hint},
            )
        refused = spec.refused_fields(self.model_dump(exclude={"kind"}))
        if refused:
            raise PydanticCustomError(
                "field_not_read",
                "{kind} jobs do not read {fields}; leave them out",
                {"kind": self.kind, "fields": ", ".join(refused)},
            )
        return self

    return create_model(
        "JobRequest",
        __base__=JobParams,
        __validators__={"fits_the_kind": model_validator(mode="after")(fits_the_kind)},
        kind=(kind_type, Field(description="Job kind; photo_avatar jobs use POST /v1/jobs/photo.")),
    )


class ArtifactOut(BaseModel):
    name: str = Field(description="asset.glb, turntable.mp4, preview.png or attributes.json.")
    content_type: str
    size: int = Field(description="Bytes.")
    url: str = Field(description="Path of the file on this server.")


class PreviewOut(BaseModel):
    url: str = Field(description="GET it for the PNG; its ETag is ``version``.")
    version: str = Field(description="Changes whenever a new image replaces the old one.")


class JobOut(BaseModel):
    id: str = Field(description="32 hex characters.")
    kind: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    stage: str = Field(description='Engine step name; "" while queued.')
    progress: float = Field(ge=0, le=1)
    eta_seconds: float | None = Field(description="Seconds left; null when unknown.")
    message: str = Field(description="A line for people.")
    error: str | None = Field(description="On failure: a reason a person can act on.")
    params: dict[str, Any] = Field(description="The validated request, seed filled in.")
    created_at: str
    started_at: str | None
    finished_at: str | None
    artifacts: list[ArtifactOut] = Field(description="Finished files; listed only once the job succeeded.")
    preview: PreviewOut | None = Field(
        None,
        description="The newest preview image (the engine's progress image while it runs, the finished "
        "preview after); null when there is none yet.",
    )


class JobList(BaseModel):
    jobs: list[JobOut]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Info(BaseModel):
    version: str
    device: str = Field(description='"cuda", "cpu", or "starting" until the worker has looked.')
    device_name: str = ""
    device_warning: str | None
    kinds: list[str]
    engines: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per kind: the request fields it reads (others must be left out or at their "
        "defaults), whether it needs a prompt, whether it takes a photo upload.",
    )
    models: dict[str, str]
    queue_length: int
    running: str | None = Field(description="Id of the job running now, if any.")
    worker_pid: int | None = Field(description="Process id of the worker, for operators.")
    worker_threads: int | None = Field(None, description="torch CPU threads the worker runs jobs with.")
    workers: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Every worker: index, backend (local or ray), device (e.g. cuda:1, cpu), gpu (the "
        "GPU it is pinned to), cuda_visible_devices (as the worker itself reports it), pid, node (Ray), "
        "running (the job it runs, else null), jobs_run.",
    )
    backend: dict[str, Any] = Field(
        default_factory=dict,
        description="Where jobs run: kind (local or ray), address, status (up, down, starting), and "
        "message (why it is down and what to do, else null).",
    )
    attributes: dict[str, list[str]]
    presets: list[str]
    limits: dict[str, int] = Field(description="Upload and prompt limits.")
    disk: dict[str, Any] = Field(
        default_factory=dict,
        description="The data folder's disk: data_dir, free_mb, min_free_mb (the floor under which "
        "submissions get 507), accepting_jobs, and reason (why not, else null).",
    )
