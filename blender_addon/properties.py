"""Scene settings (``Scene.kiln``): what to generate, the job list saved in the .blend, turntable options."""

from __future__ import annotations

import json

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from .protocol import SEED_MAX, JobRequest, OutputOptions, kind_info

MODE_TO_KIND = {"OBJECT": "text_to_3d", "AVATAR": "avatar", "PHOTO": "photo_avatar"}


class KILN_PG_attribute(bpy.types.PropertyGroup):
    """One avatar attribute override (name/value as listed by the server's /v1/info)."""

    key: StringProperty(name="Attribute", description="Attribute name, e.g. hair_style")
    value: StringProperty(name="Value", description="Attribute value, e.g. bob")


FROM_PROMPT = "__prompt__"
"""The value of an attribute dropdown that pins nothing: the prompt, the photo or the seed decide."""
_ITEMS: dict[tuple[str, tuple[str, ...]], list] = {}
"""Enum items per (attribute, values), kept alive: Blender does not copy dynamic enum strings."""


def vocabulary(settings) -> dict[str, tuple[str, ...]]:
    """The server's attribute vocabulary as last fetched (``Refresh Attributes``), {} before."""
    try:
        data = json.loads(settings.vocab_json or "{}")
    except ValueError:
        return {}
    return {str(k): tuple(str(v) for v in vs) for k, vs in data.items() if isinstance(vs, list)}


def _pin_items(self, context):
    settings = self.id_data.kiln
    values = vocabulary(settings).get(self.key, ())
    if self.key and self.value_cache and self.value_cache not in values:
        values = (*values, self.value_cache)  # a value this server no longer lists stays visible
    key = (self.key, values)
    if key not in _ITEMS:
        items = [(FROM_PROMPT, "From Prompt", "Not pinned: the prompt, the photo or the seed decide")]
        items += [(v, v.replace("_", " ").title(), f"Pin {self.key} to {v}") for v in values]
        _ITEMS[key] = items
    return _ITEMS[key]


def _pin_changed(self, context):
    self.value_cache = "" if self.value == FROM_PROMPT else self.value


class KILN_PG_pin(bpy.types.PropertyGroup):
    """One avatar attribute as a dropdown of the server's vocabulary: from the prompt, or pinned."""

    key: StringProperty(name="Attribute")
    value: EnumProperty(name="Value", items=_pin_items, update=_pin_changed)
    value_cache: StringProperty(
        name="Pinned", description="The pinned value as text (kept when the vocabulary is refreshed)"
    )

    @property
    def pinned(self) -> str:
        """The pinned value, "" when the attribute is left to the prompt."""
        return self.value_cache


NO_CHANGE = "__none__"


def _variant_attribute_items(self, context):
    names = tuple(vocabulary(self))
    key = ("__names__", names)
    if key not in _ITEMS:
        _ITEMS[key] = [(NO_CHANGE, "Nothing", "Change no attribute (only the prompt)")]
        _ITEMS[key] += [(n, n.replace("_", " ").title(), f"Change {n}") for n in names]
    return _ITEMS[key]


def _variant_attribute_changed(self, context):
    self.variant_pin.key = "" if self.variant_attribute == NO_CHANGE else self.variant_attribute
    self.variant_pin.value = FROM_PROMPT
    self.variant_pin.value_cache = ""


class KILN_PG_used_attribute(bpy.types.PropertyGroup):
    """An attribute a finished avatar was made with (from its attributes.json), or a photo reading."""

    key: StringProperty(name="Attribute")
    value: StringProperty(name="Value")
    source: StringProperty(name="Source", description="photo, prompt or request (an override)")
    confidence: FloatProperty(name="Confidence", default=-1.0, description="Photo readings: 0 .. 1; -1: none")
    used: BoolProperty(name="Used", default=True, description="False: read from the photo but too unsure")


class KILN_PG_note(bpy.types.PropertyGroup):
    """A remark of the server on how it read the request."""

    kind: StringProperty(name="Kind", description="unknown_word, conflict or warning")
    text: StringProperty(name="Text")


class KILN_PG_job(bpy.types.PropertyGroup):
    """A job as remembered in the .blend, so a reopened file picks up its running jobs."""

    local_id: StringProperty(name="Local ID", description="Names this entry before the server gave a job id")
    job_id: StringProperty(name="Job ID")
    kind: StringProperty(name="Kind")
    prompt: StringProperty(name="Prompt")
    seed: IntProperty(name="Seed", default=-1)
    state: StringProperty(name="State", default="queued")
    stage: StringProperty(name="Stage")
    progress: FloatProperty(name="Progress", min=0.0, max=1.0, subtype="FACTOR")
    message: StringProperty(name="Message")
    error: StringProperty(name="Error")
    object_name: StringProperty(name="Object", description="The imported object, once imported")
    out_dir: StringProperty(name="Folder", subtype="DIR_PATH")
    glb_path: StringProperty(name="GLB", subtype="FILE_PATH")
    video_path: StringProperty(name="Turntable", subtype="FILE_PATH")
    auto_import: BoolProperty(name="Import When Done", default=True)
    turntable: BoolProperty(name="Turntable When Done", default=False)
    rig: BoolProperty(
        name="Rig",
        default=True,
        description="Import a rigged avatar with its armature and expression shape keys; off: the bare mesh",
    )
    variant_of: StringProperty(name="Variant Of", description="The avatar this job remakes with one change")
    preview_path: StringProperty(
        name="Preview", subtype="FILE_PATH", description="The job's newest preview image, downloaded"
    )
    attributes_path: StringProperty(name="Attributes", subtype="FILE_PATH", description="attributes.json")
    made_with: CollectionProperty(type=KILN_PG_used_attribute)
    notes: CollectionProperty(type=KILN_PG_note)

    @property
    def active(self) -> bool:
        return self.state in {"submitting", "queued", "running"}


class KILN_PG_settings(bpy.types.PropertyGroup):
    mode: EnumProperty(
        name="Mode",
        items=(
            ("OBJECT", "Object from Prompt", "A textured object from a text prompt (text to 3D)"),
            ("AVATAR", "Avatar from Prompt", "An avatar from a description of a person"),
            ("PHOTO", "Avatar from Photo", "An avatar that looks like the person in a photo"),
        ),
        default="AVATAR",
    )
    prompt: StringProperty(name="Prompt", description="What to generate, in plain words")
    negative_prompt: StringProperty(name="Negative Prompt", description="What to steer away from")
    # Random by default: pressing Generate twice gives two avatars. The seed the server picked
    # shows on the finished job ("Use Seed" copies it here to make the same one again).
    use_random_seed: BoolProperty(
        name="Random Seed", description="Let the server pick a new seed for every job", default=True
    )
    use_variation: BoolProperty(
        name="Variation",
        description="Set how far avatars stray from the mean look of their attributes "
        "(off: the model's default)",
        default=False,
    )
    variation: FloatProperty(
        name="Variation",
        description="0: the mean look of the attributes (most faithful); 1: a full sample (most varied)",
        default=0.6,
        min=0.0,
        max=1.5,
        soft_max=1.0,
    )
    seed: IntProperty(
        name="Seed",
        description="Used when Random Seed is off: same seed and prompt give the same result",
        default=0,
        min=0,
    )
    preset: EnumProperty(
        name="Quality",
        items=(
            ("draft", "Draft", "A first look on a GPU (minutes)"),
            ("standard", "Standard", "Balanced; wants a GPU"),
            ("high", "High", "Slowest; wants a GPU"),
            (
                "cpu",
                "CPU",
                "Latent space without the VAE: the fastest on a CPU, still hours with a real model",
            ),
        ),
        default="draft",
    )
    attributes: CollectionProperty(type=KILN_PG_attribute)
    pins: CollectionProperty(type=KILN_PG_pin)
    variant_attribute: EnumProperty(
        name="Change", items=_variant_attribute_items, update=_variant_attribute_changed
    )
    variant_pin: PointerProperty(type=KILN_PG_pin)
    variant_prompt: StringProperty(
        name="Change", description="What to change in the selected avatar, e.g. 'with a red cap'"
    )
    vocab_json: StringProperty(
        name="Vocabulary", description="The server's avatar attributes and values (GET /v1/info), as JSON"
    )
    photo_path: StringProperty(
        name="Photo", description="A photo of one face (PNG/JPEG/WebP)", subtype="FILE_PATH"
    )
    resolution: IntProperty(
        name="Mesh Resolution", description="Marching-cubes grid", default=128, min=64, max=512
    )
    texture_size: EnumProperty(
        name="Texture Size",
        items=[(str(s), f"{s} px", "") for s in (256, 512, 1024, 2048, 4096)],
        default="1024",
    )
    auto_import: BoolProperty(name="Import When Done", default=True)
    custom_kind: StringProperty(
        name="Custom Kind",
        description="A job kind the server added (kiln-server --engine KIND=...); empty uses the mode's engine",
    )

    # Turntable.
    turntable_frames: IntProperty(
        name="Frames", description="Frames of one full turn", default=48, min=2, max=720
    )
    turntable_size: IntProperty(
        name="Size", description="Square video edge in pixels", default=512, min=16, max=4096
    )
    turntable_samples: IntProperty(name="Samples", description="Render samples per pixel", default=16, min=1)
    turntable_engine: EnumProperty(
        name="Engine",
        items=(("CYCLES", "Cycles (CPU)", "Works everywhere"), ("EEVEE", "EEVEE", "Fast with a GPU")),
        default="CYCLES",
    )
    turntable_after_generate: BoolProperty(name="Turntable When Done", default=False)
    turntable_expressions: BoolProperty(
        name="Expressions",
        description="On a rigged avatar: blink, smile and open the jaw during the turn",
        default=False,
    )
    rig: BoolProperty(
        name="Rig Avatars",
        default=True,
        description="Avatars come in rigged: an armature (root, neck, head, jaw, eyes) and expression shape keys",
    )
    image_plane: BoolProperty(name="Image Plane", description="Also show the video on a plane", default=False)

    jobs: CollectionProperty(type=KILN_PG_job)
    active_job_index: IntProperty(default=0)

    def to_request(self) -> JobRequest:
        """The panel's settings as a job request (raises ValueError on bad input)."""
        seed = None if self.use_random_seed else min(self.seed, SEED_MAX)
        kind = self.custom_kind.strip() or MODE_TO_KIND[self.mode]
        attributes = {a.key.strip(): a.value.strip() for a in self.attributes if a.key.strip()}
        attributes.update({p.key: p.pinned for p in self.pins if p.pinned})  # the dropdowns win
        reads = kind_info(kind).reads
        request = JobRequest(
            kind=kind,
            prompt=self.prompt.strip(),
            negative_prompt=self.negative_prompt.strip() if reads("negative_prompt") else "",
            seed=seed,
            preset=self.preset if reads("preset") else "draft",
            attributes=attributes if reads("attributes") else {},
            # The panel renders its own turntable in Blender: no server-side video.
            output=OutputOptions(
                resolution=self.resolution, texture_size=int(self.texture_size), turntable_frames=0
            ),
            variation=float(self.variation) if self.use_variation and reads("variation") else None,
            # Only "off" is sent, so servers that predate rigging accept the job.
            rig=False if not self.rig and reads("rig") else None,
        )
        request.validate()
        return request


classes = (
    KILN_PG_attribute,
    KILN_PG_pin,
    KILN_PG_used_attribute,
    KILN_PG_note,
    KILN_PG_job,
    KILN_PG_settings,
)


def register_properties() -> None:
    bpy.types.Scene.kiln = PointerProperty(type=KILN_PG_settings)


def unregister_properties() -> None:
    del bpy.types.Scene.kiln
