"""Avatar attributes as the artist edits them: dropdowns of the server's vocabulary, pinning a
value an avatar was made with, and Variant (Rodin's text-guided editing: one change, the rest kept).

The vocabulary comes from ``GET /v1/info`` (``Refresh Attributes``; Check Connection and every
finished avatar job refresh it too) and is kept in the scene, so the dropdowns work offline after.
A variant is a new avatar job with the selected avatar's seed, its whole attribute set as
``base_attributes`` (the server keeps them unless the change says otherwise) and the change: a
pinned attribute, a prompt ("with a red cap"), or both. It is imported beside the original,
named after the change, and both carry the link (``kiln_variant_of``, ``kiln_variants``).
"""

from __future__ import annotations

import json
import threading

import bpy
from bpy.props import StringProperty

from . import runtime
from .client import KilnError
from .preferences import client_settings
from .properties import FROM_PROMPT, NO_CHANGE, vocabulary
from .protocol import JobRequest, OutputOptions

AVATAR_KINDS = ("avatar", "photo_avatar")


def sync_vocabulary(settings, vocab: dict[str, tuple[str, ...]]) -> None:
    """Store ``vocab`` and make one dropdown per attribute, keeping every pinned value."""
    settings.vocab_json = json.dumps({k: list(v) for k, v in vocab.items()})
    pins = settings.pins
    pinned = {p.key: p.pinned for p in pins if p.pinned}
    for index in range(len(pins) - 1, -1, -1):
        if pins[index].key not in vocab and not pins[index].pinned:
            pins.remove(index)
    have = {p.key for p in pins}
    for name in vocab:
        if name not in have:
            pins.add().key = name
    for pin in pins:  # enum indices may have moved with the new items: set each by its value
        pin.value = pinned.get(pin.key) or FROM_PROMPT
        pin.value_cache = pinned.get(pin.key, "")


def pin(settings, key: str, value: str) -> None:
    """Pin attribute ``key`` to ``value`` (a new dropdown when the vocabulary does not list it)."""
    entry = next((p for p in settings.pins if p.key == key), None)
    if entry is None:
        entry = settings.pins.add()
        entry.key = key
    entry.value_cache = value
    if value in vocabulary(settings).get(key, ()):
        entry.value = value


def fetch_vocabulary(context) -> dict[str, tuple[str, ...]]:
    """The server's vocabulary (blocking; raises KilnError with the reason)."""
    info = client_settings(context).client().info()
    if not info.attributes:
        raise KilnError("the server lists no avatar attributes; is the avatar engine installed there?")
    return dict(info.attributes)


class KILN_OT_refresh_attributes(bpy.types.Operator):
    """Load the avatar attributes and their values from the Kiln server, as dropdowns"""

    bl_idname = "kiln.refresh_attributes"
    bl_label = "Refresh Attributes"

    def execute(self, context):
        scene = context.scene
        if not runtime.ui_is_live():
            try:
                sync_vocabulary(scene.kiln, fetch_vocabulary(context))
            except KilnError as ex:
                self.report({"ERROR"}, f"Kiln: {ex}")
                return {"CANCELLED"}
            return {"FINISHED"}
        settings = client_settings(context)
        try:
            client = settings.client()  # on the main thread: it reads bpy.app.online_access
        except KilnError as ex:
            self.report({"ERROR"}, f"Kiln: {ex}")
            return {"CANCELLED"}
        answer: list = []

        def ask() -> None:
            try:
                answer.append(dict(client.info().attributes))
            except Exception as ex:  # the timer below must always get an answer
                answer.append(ex)

        def show() -> float | None:
            if not answer:
                return 0.2
            if isinstance(answer[0], dict) and answer[0]:
                sync_vocabulary(scene.kiln, answer[0])
                runtime.notify(f"Kiln: {len(answer[0])} avatar attributes loaded", "INFO")
            else:
                runtime.notify(f"Kiln: could not load the attributes: {answer[0] or 'none listed'}")
            return None

        threading.Thread(target=ask, daemon=True).start()
        bpy.app.timers.register(show, first_interval=0.2)
        return {"FINISHED"}


class KILN_OT_pin_attribute(bpy.types.Operator):
    """Pin this value for the next avatars (it was drawn by the seed or read from the prompt or photo)"""

    bl_idname = "kiln.pin_attribute"
    bl_label = "Pin Attribute"
    bl_options = {"INTERNAL", "UNDO"}

    key: StringProperty()
    value: StringProperty()

    def execute(self, context):
        if not self.key or not self.value:
            return {"CANCELLED"}
        pin(context.scene.kiln, self.key, self.value)
        self.report({"INFO"}, f"Kiln: {self.key} pinned to {self.value}")
        return {"FINISHED"}


class KILN_OT_unpin_attributes(bpy.types.Operator):
    """Leave every attribute to the prompt again"""

    bl_idname = "kiln.unpin_attributes"
    bl_label = "Unpin All"
    bl_options = {"INTERNAL", "UNDO"}

    def execute(self, context):
        for entry in context.scene.kiln.pins:
            entry.value = FROM_PROMPT
            entry.value_cache = ""
        return {"FINISHED"}


def kiln_avatar(obj):
    """The imported Kiln avatar ``obj`` belongs to (itself, or the parent holding the provenance)."""
    while obj is not None:
        if "kiln_job_id" in obj and obj.get("kiln_kind") in AVATAR_KINDS:
            return obj
        obj = obj.parent
    return None


def _plain(value):
    return value.to_dict() if hasattr(value, "to_dict") else dict(value)


def variant_request(obj, settings, attribute: str = "", value: str = "", prompt: str = "") -> JobRequest:
    """The job that remakes avatar ``obj`` with one change (raises ValueError saying what is missing)."""
    seed = obj.get("kiln_seed")
    made_with = _plain(obj.get("kiln_attributes") or {})
    if seed is None or not made_with:
        raise ValueError(
            f"{obj.name} has no Kiln seed or attributes; a variant needs an avatar imported by Kiln"
        )
    prompt = prompt.strip()
    change = {attribute: value} if attribute and value else {}
    if not change and not prompt:
        raise ValueError(
            "choose what to change: an attribute and its value, or a prompt such as 'with a red cap'"
        )
    if change and made_with.get(attribute) == value and not prompt:
        raise ValueError(f"{obj.name} already has {attribute} {value}; pick another value")
    request = JobRequest(
        "avatar",
        prompt,
        seed=int(seed),
        attributes=change,
        base_attributes={k: str(v) for k, v in made_with.items() if k not in change},
        output=OutputOptions(
            resolution=settings.resolution, texture_size=int(settings.texture_size), turntable_frames=0
        ),
        rig=False if not settings.rig else None,
    )
    request.validate()
    return request


def variant_label(obj, attribute: str, value: str, prompt: str) -> str:
    what = [f"{attribute.replace('_', ' ')} {value}"] if attribute and value else []
    what += [prompt.strip()] if prompt.strip() else []
    return f"{obj.name} ({', '.join(what)})"


class KILN_OT_variant(bpy.types.Operator):
    """Remake the selected avatar with the same seed and attributes but one change, placed beside it"""

    bl_idname = "kiln.variant"
    bl_label = "Variant"
    bl_options = {"REGISTER"}

    attribute: StringProperty(name="Attribute", description="Empty: the panel's Variant attribute")
    value: StringProperty(name="Value")
    prompt: StringProperty(name="Change", description="e.g. 'with a red cap'; empty: the panel's")

    @classmethod
    def poll(cls, context):
        return kiln_avatar(context.active_object) is not None

    def execute(self, context):
        settings = context.scene.kiln
        obj = kiln_avatar(context.active_object)
        if obj is None:
            self.report({"ERROR"}, "Kiln: select an avatar that Kiln imported")
            return {"CANCELLED"}
        attribute = self.attribute or (settings.variant_pin.key if settings.variant_pin.pinned else "")
        value = self.value or settings.variant_pin.pinned
        prompt = self.prompt or settings.variant_prompt
        try:
            request = variant_request(obj, settings, attribute, value, prompt)
        except ValueError as ex:
            self.report({"ERROR"}, f"Kiln: {ex}")
            return {"CANCELLED"}
        item = runtime.new_job_item(context.scene, request, variant_label(obj, attribute, value, prompt))
        item.variant_of = obj.name
        item.auto_import = True
        spec = runtime.make_spec(item, request, None, client_settings(context).resolved_output_dir())
        error = runtime.run_or_start(context, item, spec)
        if error:
            self.report({"ERROR"}, f"Kiln: {error}")
            return {"CANCELLED"}
        if not runtime.ui_is_live():
            return {"FINISHED"}
        self.report({"INFO"}, f"Kiln: making {item.prompt[:60]!r}")
        return {"FINISHED"}


def draw_attribute_dropdowns(layout, settings) -> None:
    """The avatar attributes as dropdowns (after Refresh Attributes), else the button to load them."""
    box = layout.box()
    header = box.row(align=True)
    header.label(text="Attributes")
    header.operator("kiln.unpin_attributes", text="", icon="X", emboss=False)
    header.operator("kiln.refresh_attributes", text="", icon="FILE_REFRESH", emboss=False)
    if not vocabulary(settings):
        box.operator("kiln.refresh_attributes", text="Load Attributes from Server", icon="IMPORT")
        return
    col = box.column(align=True)
    for entry in settings.pins:
        col.prop(entry, "value", text=entry.key.replace("_", " ").title())


def draw_variant(layout, context) -> None:
    """Variant of the selected avatar: the attribute to change and its new value, or a prompt."""
    settings = context.scene.kiln
    obj = kiln_avatar(context.active_object)
    if obj is None:
        return
    box = layout.box()
    box.label(text=f"Variant of {obj.name}", icon="DUPLICATE")
    col = box.column(align=True)
    if vocabulary(settings):
        col.prop(settings, "variant_attribute", text="Change")
        if settings.variant_attribute != NO_CHANGE:
            col.prop(settings.variant_pin, "value", text="To")
    col.prop(settings, "variant_prompt", text="Or")
    box.operator("kiln.variant", icon="PLAY")


classes = (KILN_OT_refresh_attributes, KILN_OT_pin_attribute, KILN_OT_unpin_attributes, KILN_OT_variant)
