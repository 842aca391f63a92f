"""View3D > Sidebar > Kiln: generate settings, the job list with progress, expressions, the turntable."""

from __future__ import annotations

import bpy

from . import editing, importer, localserver, previews
from .properties import MODE_TO_KIND, vocabulary
from .protocol import ACTIVE_STATES, kind_info


def attribute_text(entry) -> str:
    """``"hair_style: bob (photo 82%)"``; a photo reading too unsure to use ends in ``"not used"``."""
    detail = entry.source
    if entry.confidence >= 0:
        detail = f"{detail} {entry.confidence:.0%}".strip()
    text = f"{entry.key}: {entry.value}"
    if not entry.used:
        return f"{text} ({detail}, not used: the model chose)"
    return f"{text} ({detail})" if detail else text


def note_lines(item) -> list[tuple[str, str]]:
    """(text, icon) for the server's remarks: words not understood, conflicts, photo warnings."""
    words = [n.text for n in item.notes if n.kind == "unknown_word"]
    lines = [("Not understood: " + ", ".join(words), "QUESTION")] if words else []
    lines += [(f"Conflict: {n.text}", "ERROR") for n in item.notes if n.kind == "conflict"]
    lines += [(f"Photo: {n.text}", "INFO") for n in item.notes if n.kind == "warning"]
    return lines


def last_finished(settings):
    """(index, entry) of the newest succeeded job, or (-1, None)."""
    for index in range(len(settings.jobs) - 1, -1, -1):
        if settings.jobs[index].state == "succeeded":
            return index, settings.jobs[index]
    return -1, None


def draw_made_with(layout, item, index: int, attributes: bool = True) -> None:
    """The seed the server used (with Use Seed) and, on request, the attributes the avatar was made with."""
    row = layout.row(align=True)
    row.label(text=f"Seed {item.seed}" if item.seed >= 0 else "Seed unknown")
    if item.seed >= 0:
        op = row.operator("kiln.use_seed", text="Use Seed", icon="RECOVER_LAST")
        op.index = index
    if not attributes:
        return
    if len(item.made_with):
        col = layout.column(align=True)
        col.label(text="Made with:")
        for entry in item.made_with:
            row = col.row(align=True)
            row.label(text=attribute_text(entry), icon="DOT" if entry.used else "QUESTION")
            op = row.operator("kiln.pin_attribute", text="", icon="PINNED", emboss=False)
            op.key, op.value = entry.key, entry.value
    for text, icon in note_lines(item):
        layout.label(text=text, icon=icon)


def last_job(settings):
    return settings.jobs[-1] if len(settings.jobs) else None


def draw_preview(layout, item, scale: float = 7.0) -> bool:
    """The job's newest preview image (the forming object while it runs), with its progress line."""
    icon_value = previews.icon_id(item) if item is not None else 0
    if not icon_value:
        return False
    box = layout.box()
    box.template_icon(icon_value=icon_value, scale=scale)
    if item.state in ACTIVE_STATES:
        box.label(text=f"{item.stage or item.state} {item.progress:.0%} {item.message}".strip())
    return True


class KILN_UL_jobs(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        row = layout.row(align=True)
        label = item.prompt or item.job_id[:8] or "job"
        if item.error:
            # Also a job still running on a server we lost: Resume (the refresh button) follows it again.
            row.label(text=label, icon="ERROR")
            row.label(text="lost" if item.state in ACTIVE_STATES else item.state)
        elif item.state in ACTIVE_STATES or item.state == "submitting":
            icon_value = previews.icon_id(item)
            if icon_value:
                row.label(text=label, icon_value=icon_value)
            else:
                row.label(text=label, icon="SORTTIME")
            text = f"{item.stage or item.state} {item.progress:.0%}"
            row.progress(factor=item.progress, type="BAR", text=text)
            op = row.operator("kiln.cancel", text="", icon="CANCEL", emboss=False)
            op.index = index
        else:
            row.label(text=label, icon="CHECKMARK" if item.state == "succeeded" else "X")
            row.label(text=item.object_name or item.state)


class VIEW3D_PT_kiln(bpy.types.Panel):
    bl_label = "Kiln"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Kiln"

    def draw(self, context):
        settings = context.scene.kiln
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.prop(settings, "mode")
        col = layout.column()
        if settings.mode == "PHOTO":
            col.prop(settings, "photo_path")
            # Sent with the photo and overriding what it shows ("with a red cap"), so it must be
            # visible here: a prompt left over from the other modes would change the avatar unseen.
            col.prop(settings, "prompt", text="Changes")
        else:
            col.prop(settings, "prompt")
        if settings.mode == "OBJECT":
            col.prop(settings, "negative_prompt")
        row = col.row(align=True)
        row.prop(settings, "use_random_seed")
        sub = row.row()
        sub.enabled = not settings.use_random_seed
        sub.prop(settings, "seed", text="")
        kind = settings.custom_kind.strip() or MODE_TO_KIND[settings.mode]
        if kind_info(kind).reads("preset"):  # avatars have no presets
            col.prop(settings, "preset")
        col.prop(settings, "resolution")
        col.prop(settings, "texture_size")
        if settings.mode in {"AVATAR", "PHOTO"}:
            col.prop(settings, "rig")
            row = col.row(align=True)
            row.prop(settings, "use_variation")
            sub = row.row()
            sub.enabled = settings.use_variation
            sub.prop(settings, "variation", text="", slider=True)
            editing.draw_attribute_dropdowns(layout, settings)
            # Free-text overrides: for a server whose vocabulary is not loaded, or values it adds.
            if len(settings.attributes) or not vocabulary(settings):
                box = layout.box()
                header = box.row()
                header.label(text="Attribute Overrides")
                header.operator("kiln.attribute_add", text="", icon="ADD", emboss=False)
                for index, attribute in enumerate(settings.attributes):
                    row = box.row(align=True)
                    row.prop(attribute, "key", text="")
                    row.prop(attribute, "value", text="")
                    op = row.operator("kiln.attribute_remove", text="", icon="X", emboss=False)
                    op.index = index
        col = layout.column()
        col.prop(settings, "custom_kind")
        col.prop(settings, "auto_import")
        col.prop(settings, "turntable_after_generate")
        if localserver.should_offer_start(context):
            box = layout.box()
            box.label(text=localserver.status(context).message, icon="ERROR")
            box.operator("kiln.local_server_start", icon="PLAY")
        layout.operator("kiln.generate", icon="PLAY")
        editing.draw_variant(layout, context)
        last = settings.jobs[-1] if len(settings.jobs) else None
        if last is not None and last.error:
            layout.label(text=last.error, icon="ERROR")
        draw_preview(layout, last)
        # How the newest finished job was read: its seed (to make it again) and attributes.
        index, done = last_finished(settings)
        if done is not None:
            box = layout.box()
            box.label(text=f"Last: {done.object_name or done.prompt or done.job_id[:8]}", icon="CHECKMARK")
            draw_made_with(box, done, index)


class VIEW3D_PT_kiln_jobs(bpy.types.Panel):
    bl_label = "Jobs"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Kiln"
    bl_parent_id = "VIEW3D_PT_kiln"

    def draw(self, context):
        settings = context.scene.kiln
        layout = self.layout
        row = layout.row()
        row.template_list("KILN_UL_jobs", "", settings, "jobs", settings, "active_job_index", rows=3)
        side = row.column(align=True)
        side.operator("kiln.job_remove", text="", icon="REMOVE")
        side.operator("kiln.resume_jobs", text="", icon="FILE_REFRESH")
        if not 0 <= settings.active_job_index < len(settings.jobs):
            return
        item = settings.jobs[settings.active_job_index]
        col = layout.column(align=True)
        col.label(text=f"{item.kind or 'job'} {item.job_id[:8]}")
        if item.message:
            col.label(text=item.message)
        if item.error:
            col.label(text=item.error, icon="ERROR")
        if item != last_job(settings):  # the main panel shows the newest job's preview
            draw_preview(layout, item)
        # The main panel already shows the newest finished job's attributes.
        shown, _ = last_finished(settings)
        draw_made_with(layout.column(), item, settings.active_job_index, shown != settings.active_job_index)
        row = layout.row(align=True)
        row.enabled = bool(item.glb_path)
        row.operator("kiln.import_result", icon="IMPORT")


class VIEW3D_PT_kiln_turntable(bpy.types.Panel):
    bl_label = "Turntable"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Kiln"
    bl_parent_id = "VIEW3D_PT_kiln"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        settings = context.scene.kiln
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        col = layout.column()
        col.prop(settings, "turntable_engine")
        col.prop(settings, "turntable_frames")
        col.prop(settings, "turntable_size")
        col.prop(settings, "turntable_samples")
        col.prop(settings, "turntable_expressions")
        col.prop(settings, "image_plane")
        layout.operator("kiln.render_turntable", icon="RENDER_ANIMATION")
        layout.operator("kiln.import_video", icon="SEQUENCE")


class VIEW3D_PT_kiln_expressions(bpy.types.Panel):
    """Sliders for the expression shape keys of the selected rigged avatar."""

    bl_label = "Expressions"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Kiln"
    bl_parent_id = "VIEW3D_PT_kiln"

    @classmethod
    def poll(cls, context):
        return importer.expression_mesh(context.active_object) is not None

    def draw(self, context):
        mesh = importer.expression_mesh(context.active_object)
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        col = layout.column(align=True)
        blocks = mesh.data.shape_keys.key_blocks
        for name in importer.EXPRESSIONS:
            block = blocks.get(name)
            if block is not None:
                col.prop(block, "value", text=name.replace("_", " ").title(), slider=True)
        arm = importer.armature_of(mesh)
        if arm is not None:
            layout.label(
                text=f"Armature: {arm.name} (pose the jaw, head and eye bones)", icon="ARMATURE_DATA"
            )


classes = (
    KILN_UL_jobs,
    VIEW3D_PT_kiln,
    VIEW3D_PT_kiln_jobs,
    VIEW3D_PT_kiln_expressions,
    VIEW3D_PT_kiln_turntable,
)
