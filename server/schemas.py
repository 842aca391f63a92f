"""Request and response models of the HTTP API (docs/API.md); ranges here are the validation."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
)

PROMPT_MAX_CHARS = 1000
"""Longest prompt or negative prompt; text encoders read far fewer tokens than this."""
SEED_MAX = 2**31 - 1
PRESETS = ("draft", "standard", "high")


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


class OutputOptions(BaseModel):
    """What to make from the finished field."""

    model_config = ConfigDict(extra="forbid")

    resolution: int = Field(128, ge=64, le=512, description="Marching-cubes grid size per axis.")
    texture_size: int = Field(1024, ge=256, le=4096, description="Baked texture width and height in pixels.")
    turntable_frames: int = Field(
        36, ge=0, le=360, description="Frames of the turntable video; 0 = no video."
    )
    turntable_size: int = Field(
        256, ge=64, le=1024, description="Turntable video width and height in pixels."
    )


class JobParams(BaseModel):
    """Everything a job request holds except its kind (shared by the JSON and photo routes)."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field("", description="Job kind; see GET /v1/info for the kinds this server runs.")
    prompt: Text = Field("", max_length=PROMPT_MAX_CHARS, validate_default=True, description="What to make.")
    negative_prompt: Text = Field("", max_length=PROMPT_MAX_CHARS, description="What to avoid.")
    seed: int | None = Field(
        None, ge=0, le=SEED_MAX, description="Random seed; omitted = random, echoed back."
    )
    preset: Literal["draft", "standard", "high"] = Field("draft", description="Quality and time preset.")
    attributes: dict[Annotated[Text, Field(max_length=64)], Annotated[Text, Field(max_length=64)]] = Field(
        default_factory=dict, max_length=32, description="Avatar attribute overrides (GET /v1/info)."
    )
    guidance_scale: float | None = Field(
        None,
        gt=0,
        le=100,
        allow_inf_nan=False,
        description="Classifier-free guidance; null = engine default.",
    )
    variation: float | None = Field(
        None,
        ge=0,
        le=1.5,
        allow_inf_nan=False,
        description="Avatar kinds: how far each avatar strays from the mean look of its attributes "
        "(0 = the mean, 1 = a full sample); null = the model's default.",
    )
    output: OutputOptions = Field(default_factory=OutputOptions)

    @field_validator("prompt")
    @classmethod
    def _prompt_needed(cls, prompt: str, info: ValidationInfo) -> str:
        if info.data.get("kind") == "text_to_3d" and not prompt.strip():
            raise ValueError(
                "a text_to_3d job needs a prompt; describe the object, e.g. 'a red ceramic teapot'"
            )
        return prompt

    @field_validator("attributes")
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


def job_request_model(kinds: list[str]) -> type[JobParams]:
    """The POST /v1/jobs body, with ``kind`` restricted to the kinds this server runs."""
    kind_type = Literal[tuple(kinds)] if kinds else Literal["none"]  # type: ignore[valid-type]
    return create_model(
        "JobRequest",
        __base__=JobParams,
        kind=(kind_type, Field(description="Job kind; photo_avatar jobs use POST /v1/jobs/photo.")),
    )


class ArtifactOut(BaseModel):
    name: str = Field(description="asset.glb, turntable.mp4, preview.png or attributes.json.")
    content_type: str
    size: int = Field(description="Bytes.")
    url: str = Field(description="Path of the file on this server.")


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
    models: dict[str, str]
    queue_length: int
    running: str | None = Field(description="Id of the job running now, if any.")
    worker_pid: int | None = Field(description="Process id of the worker, for operators.")
    worker_threads: int | None = Field(None, description="torch CPU threads the worker runs jobs with.")
    attributes: dict[str, list[str]]
    presets: list[str]
    limits: dict[str, int] = Field(description="Upload and prompt limits.")
