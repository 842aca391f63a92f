"""Wire types of the Kiln server API (docs/API.md) as plain dataclasses, free of bpy."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

JOB_KINDS = ("avatar", "text_to_3d", "photo_avatar")
PRESETS = ("draft", "standard", "high", "cpu")
PROMPT_MAX_CHARS = 1000
ACTIVE_STATES = frozenset({"queued", "running"})
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
SEED_MAX = 2**31 - 1

GLB_ARTIFACT = "asset.glb"
VIDEO_ARTIFACT = "turntable.mp4"
PREVIEW_ARTIFACT = "preview.png"
ATTRIBUTES_ARTIFACT = "attributes.json"


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} is {value}; use a value from {low} to {high}")


@dataclass(frozen=True)
class KindInfo:
    """What a job kind reads (the server's ``GET /v1/info`` ``engines``; core.pipelines.jobs.ENGINES)."""

    fields: frozenset[str]
    """Request fields the kind reads; the others are not sent."""
    needs_prompt: bool = False
    takes_photo: bool = False

    def reads(self, name: str) -> bool:
        return name in self.fields

    @classmethod
    def from_dict(cls, data: Any) -> KindInfo:
        if not isinstance(data, dict):
            return ANY_KIND
        return cls(
            frozenset(str(f) for f in data.get("fields") or ANY_KIND.fields),
            bool(data.get("needs_prompt")),
            bool(data.get("takes_photo")),
        )


REQUEST_FIELDS = frozenset(
    {
        "prompt",
        "negative_prompt",
        "seed",
        "preset",
        "attributes",
        "base_attributes",
        "guidance_scale",
        "variation",
        "rig",
        "output",
    }
)
ANY_KIND = KindInfo(REQUEST_FIELDS)
"""A kind the add-on does not know (a server's ``--engine``): every field is sent."""
_AVATAR_FIELDS = frozenset(
    {"prompt", "seed", "attributes", "base_attributes", "guidance_scale", "variation", "rig", "output"}
)
KINDS: dict[str, KindInfo] = {
    "avatar": KindInfo(_AVATAR_FIELDS),
    "photo_avatar": KindInfo(_AVATAR_FIELDS, takes_photo=True),
    "text_to_3d": KindInfo(
        frozenset({"prompt", "negative_prompt", "seed", "preset", "guidance_scale", "output"}),
        needs_prompt=True,
    ),
}
"""The kinds of this version's server, before ``GET /v1/info`` says otherwise (tested against it)."""


def kind_info(kind: str, server: ServerInfo | None = None) -> KindInfo:
    """What ``kind`` reads: from the server when it said, else this version's table."""
    if server is not None and kind in server.engines:
        return server.engines[kind]
    return KINDS.get(kind, ANY_KIND)


@dataclass
class OutputOptions:
    """What the server should produce besides the mesh itself."""

    resolution: int = 128
    """Marching-cubes grid size (64 .. 512): more means finer geometry and a slower job."""
    texture_size: int = 1024
    """Baked albedo texture edge in pixels (64 .. 4096)."""
    turntable_frames: int = 36
    """Frames of the server-side turntable video (0 = none; the panel asks for 0, since it
    renders its own turntable in Blender)."""
    turntable_size: int = 256
    """Edge of the server-side turntable video in pixels (64 .. 1024)."""

    def validate(self) -> None:
        """Raise ValueError naming the field and its allowed range."""
        _check_range("mesh resolution", self.resolution, 64, 512)
        _check_range("texture size", self.texture_size, 64, 4096)
        _check_range("turntable frames", self.turntable_frames, 0, 360)
        _check_range("turntable size", self.turntable_size, 64, 1024)

    def to_dict(self) -> dict[str, int]:
        return {
            "resolution": int(self.resolution),
            "texture_size": int(self.texture_size),
            "turntable_frames": int(self.turntable_frames),
            "turntable_size": int(self.turntable_size),
        }


@dataclass
class JobRequest:
    """A job as the add-on asks for it; ``to_dict`` is the JSON body of ``POST /v1/jobs``."""

    kind: str
    """"avatar", "text_to_3d", "photo_avatar" (sent as multipart with a photo) or a kind the server added."""
    prompt: str = ""
    """What to make, in plain words."""
    negative_prompt: str = ""
    """What to steer away from (text_to_3d)."""
    seed: int | None = None
    """0 .. 2**31-1; None lets the server pick one and echo it back in the job's params."""
    preset: str = "draft"
    """Quality preset: "draft", "standard" or "high"."""
    attributes: dict[str, str] = field(default_factory=dict)
    """Avatar attribute overrides, e.g. {"hair_style": "bob"} (names and values: GET /v1/info)."""
    guidance_scale: float | None = None
    """Classifier-free guidance weight; None keeps the engine default."""
    output: OutputOptions = field(default_factory=OutputOptions)
    """Mesh, texture and server-side video options."""
    variation: float | None = None
    """Avatar kinds: how far the avatar strays from the mean look of its attributes, 0 (the
    mean) .. 1 (a full sample) .. 1.5; None keeps the model's default and is not sent, so
    servers that predate the setting accept the job."""
    base_attributes: dict[str, str] = field(default_factory=dict)
    """Avatar kinds: an earlier avatar's attributes to keep (a variant); the prompt and
    ``attributes`` win over them. Sent only when set."""
    rig: bool | None = None
    """Avatar kinds: False asks for a bare mesh without armature, weights and shape keys; None
    (not sent) keeps the server's default, which rigs avatars. Objects from text are never rigged."""

    def validate(self) -> None:
        """Raise ValueError with a sentence saying what to change."""
        # Servers may register extra kinds (`--engine KIND=...`), so only the shape is checked
        # here; an unknown kind gets the server's 422 naming the kinds it runs.
        if not self.kind.replace("_", "").isalnum():
            raise ValueError(f"job kind {self.kind!r} is not a kind name; use one of {', '.join(JOB_KINDS)}")
        # An avatar from attributes alone (pinned dropdowns, a variant) needs no words.
        described = self.prompt.strip() or (
            not kind_info(self.kind).needs_prompt and (self.attributes or self.base_attributes)
        )
        if not kind_info(self.kind).takes_photo and not described:
            raise ValueError("the prompt is empty; describe what to generate")
        if len(self.prompt) > PROMPT_MAX_CHARS or len(self.negative_prompt) > PROMPT_MAX_CHARS:
            raise ValueError(f"the prompt is longer than {PROMPT_MAX_CHARS} characters; shorten it")
        if self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r} is unknown; use one of {', '.join(PRESETS)}")
        if self.seed is not None:
            _check_range("seed", self.seed, 0, SEED_MAX)
        if self.rig is not None and not isinstance(self.rig, bool):
            raise ValueError(f"rig must be True, False or None, got {self.rig!r}")
        if self.variation is not None and not 0.0 <= float(self.variation) <= 1.5:
            raise ValueError(f"variation must be between 0 and 1.5, got {self.variation}")
        for key, value in self.attributes.items():
            if not key or not str(value):
                raise ValueError(f"avatar attribute {key!r} needs both a name and a value")
        self.output.validate()

    def to_dict(self, server: ServerInfo | None = None) -> dict[str, Any]:
        """The body, with only the fields the kind reads (a server refuses others set)."""
        fields: dict[str, Any] = {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "preset": self.preset,
            "attributes": dict(self.attributes),
            "guidance_scale": self.guidance_scale,
            "output": self.output.to_dict(),
        }
        if self.seed is not None:
            fields["seed"] = int(self.seed)
        if self.variation is not None:
            fields["variation"] = float(self.variation)
        if self.rig is not None:
            fields["rig"] = bool(self.rig)
        if self.base_attributes:
            fields["base_attributes"] = dict(self.base_attributes)
        info = kind_info(self.kind, server)
        return {"kind": self.kind, **{k: v for k, v in fields.items() if info.reads(k)}}


@dataclass(frozen=True)
class Artifact:
    """One finished file of a job."""

    name: str
    content_type: str
    size: int
    url: str

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Artifact:
        return cls(
            name=str(data["name"]),
            content_type=str(data.get("content_type", "application/octet-stream")),
            size=int(data.get("size", -1)),
            url=str(data.get("url", "")),
        )


@dataclass(frozen=True)
class Job:
    """The server's view of a job at one moment."""

    id: str
    kind: str
    state: str
    stage: str = ""
    progress: float = 0.0
    eta_seconds: float | None = None
    message: str = ""
    error: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    artifacts: tuple[Artifact, ...] = ()
    preview_url: str = ""
    """The job's newest preview image (``GET`` it), "" while there is none or from older servers."""
    preview_version: str = ""
    """Changes whenever a new preview replaces the old one (its ETag)."""

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def seed(self) -> int | None:
        seed = self.params.get("seed")
        return int(seed) if seed is not None else None

    def artifact(self, name: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.name == name), None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """Parse a job object; raise ValueError when the required keys are missing."""
        try:
            job_id, kind, state = str(data["id"]), str(data["kind"]), str(data["state"])
        except (KeyError, TypeError) as ex:
            raise ValueError(f"the server sent a job without {ex}; is the URL a Kiln server?") from ex
        # A malformed optional field (an artifact without a name, params as a list) must also be
        # a ValueError: callers turn that into a message, anything else would end a worker silently.
        try:
            eta = data.get("eta_seconds")
            return cls(
                id=job_id,
                kind=kind,
                state=state,
                stage=str(data.get("stage") or ""),
                progress=min(max(float(data.get("progress") or 0.0), 0.0), 1.0),
                eta_seconds=float(eta) if eta is not None else None,
                message=str(data.get("message") or ""),
                error=data.get("error"),
                params=dict(data.get("params") or {}),
                artifacts=tuple(Artifact.from_dict(a) for a in data.get("artifacts") or ()),
                preview_url=str((data.get("preview") or {}).get("url") or ""),
                preview_version=str((data.get("preview") or {}).get("version") or ""),
            )
        except (KeyError, TypeError, ValueError) as ex:
            raise ValueError(
                f"the server sent job {job_id} with a malformed field ({type(ex).__name__}: {ex}); "
                "is the server the same Kiln version as the add-on?"
            ) from ex


@dataclass(frozen=True)
class ServerInfo:
    """What ``GET /v1/info`` says about the server."""

    version: str
    device: str
    device_warning: str = ""
    kinds: tuple[str, ...] = ()
    presets: tuple[str, ...] = PRESETS
    attributes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    queue_length: int = 0
    engines: dict[str, KindInfo] = field(default_factory=dict)
    """Per kind, what it reads; empty from servers older than this field."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServerInfo:
        return cls(
            version=str(data.get("version", "?")),
            device=str(data.get("device", "?")),
            device_warning=str(data.get("device_warning") or ""),
            kinds=tuple(data.get("kinds") or ()),
            presets=tuple(data.get("presets") or PRESETS),
            attributes={
                str(k): tuple(str(v) for v in vs) for k, vs in (data.get("attributes") or {}).items()
            },
            queue_length=int(data.get("queue_length") or 0),
            engines={str(k): KindInfo.from_dict(v) for k, v in (data.get("engines") or {}).items()},
        )


@dataclass(frozen=True)
class UsedAttribute:
    """One attribute an avatar was made with, and where it came from."""

    name: str
    value: str
    source: str = ""
    """"photo", "prompt" or "request" (the attribute override); "" when the server did not say."""
    confidence: float | None = None
    """How sure the photo reading was (0 .. 1); None for attributes not read from a photo."""


@dataclass(frozen=True)
class AttributeReport:
    """What an avatar job's ``attributes.json`` says (docs/API.md): how the request was read.

    Both avatar kinds write it: ``avatar`` with the attributes used, the prompt words not
    understood and the conflicts; ``photo_avatar`` adds the photo's readings with confidences.
    Parsing is tolerant: a missing or malformed part is left empty, never an error.
    """

    attributes: tuple[UsedAttribute, ...] = ()
    """The attributes the model was conditioned on: asked for (prompt, photo, request) or, where
    the model draws what was left open, chosen by the seed (source "seed")."""
    unknown_words: tuple[str, ...] = ()
    """Prompt words the parser did not understand."""
    conflicts: tuple[str, ...] = ()
    """Contradictions in the prompt and how they were resolved."""
    unsure: tuple[UsedAttribute, ...] = ()
    """Photo readings too unsure to be used (value and confidence), so the model sampled them."""
    warnings: tuple[str, ...] = ()
    """Remarks about the photo (small face, several faces, greyscale ...)."""
    seed: int | None = None

    @property
    def notes(self) -> tuple[str, ...]:
        """Everything the artist should read, one line each."""
        lines = []
        if self.unknown_words:
            lines.append("not understood: " + ", ".join(self.unknown_words))
        lines += [f"conflict: {c}" for c in self.conflicts]
        lines += [f"photo: {w}" for w in self.warnings]
        return tuple(lines)

    @classmethod
    def from_dict(cls, data: Any) -> AttributeReport:
        if not isinstance(data, dict):
            return cls()

        def mapping(value: Any) -> dict[str, Any]:
            return value if isinstance(value, dict) else {}

        def strings(value: Any) -> tuple[str, ...]:
            return tuple(str(v) for v in value) if isinstance(value, list | tuple) else ()

        def confidence(reading: Any) -> float | None:
            try:
                return float(reading["confidence"])
            except (KeyError, TypeError, ValueError):
                return None

        sources = mapping(data.get("sources"))
        photo = mapping(data.get("photo"))
        read = mapping(photo.get("read"))
        used = mapping(data.get("attributes"))
        confidences = mapping(data.get("confidences"))
        attributes = tuple(
            UsedAttribute(
                str(name),
                str(value),
                str(sources.get(name) or ""),
                _number(confidences.get(name)) if sources.get(name) == "photo" else None,
            )
            for name, value in used.items()
        )
        # Attributes the prompt left open that the model drew for this seed (source "seed").
        attributes += tuple(
            UsedAttribute(str(name), str(value), "seed", None)
            for name, value in mapping(data.get("drawn")).items()
            if name not in used
        )
        unsure = tuple(
            UsedAttribute(str(name), str(reading.get("value")), "photo", confidence(reading))
            for name, reading in read.items()
            if isinstance(reading, dict) and not reading.get("used", True) and name not in used
        )
        unknown = strings(data.get("unknown_words"))
        conflicts = strings(data.get("conflicts"))
        seed = data.get("seed")
        return cls(
            attributes=attributes,
            unknown_words=unknown,
            conflicts=conflicts,
            unsure=unsure,
            warnings=strings(photo.get("warnings")),
            seed=int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else None,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> AttributeReport:
        """Parse the file's text; an unreadable file gives an empty report."""
        try:
            return cls.from_dict(json.loads(text))
        except ValueError:
            return cls()


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def error_detail_text(body: bytes | str | dict[str, Any] | None) -> str:
    """Turn an error body (``{"detail": ...}``) into one line a person can act on.

    A 422 detail is FastAPI's list of ``{"loc": [...], "msg": ...}``; each becomes
    ``"output.resolution: Input should be less than or equal to 512"``.
    """
    if body is None:
        return ""
    data: Any = body
    if isinstance(body, bytes | str):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            data = json.loads(text)
        except ValueError:
            return text.strip()[:300]
    detail = data.get("detail", data) if isinstance(data, dict) else data
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = [str(p) for p in item.get("loc", ()) if p != "body"]
                msg = str(item.get("msg", ""))
                parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)
