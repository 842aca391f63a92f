"""View3D > Sidebar > Kiln: generate settings, the job list with progress, the turntable."""

from __future__ import annotations

import bpy

from .protocol import ACTIVE_STATES


class KILN_UL_jobs(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        row = layout.row(align=True)
        label = item.prompt or item.job_id[:8] or "job"
        if item.error:
            # Also a job still running on a server we lost: Resume (the refresh button) follows it again.
            row.label(text=label, icon="ERROR")
            row.label(text="lost" if item.state in ACTIVE_STATES else item.state)
        elif item.state in ACTIVE_STATES or item.state == "submitting":
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
        col.prop(settings, "preset")
        col.prop(settings, "resolution")
        col.prop(settings, "texture_size")
        if settings.mode in {"AVATAR", "PHOTO"}:
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
        layout.operator("kiln.generate", icon="PLAY")
        last = settings.jobs[-1] if len(settings.jobs) else None
        if last is not None and last.error:
            layout.label(text=last.error, icon="ERROR")


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
        col.label(text=f"{item.kind or 'job'} {item.job_id[:8]}  seed {item.seed if item.seed >= 0 else '?'}")
        if item.message:
            col.label(text=item.message)
        if item.error:
            col.label(text=item.error, icon="ERROR")
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
        col.prop(settings, "image_plane")
        layout.operator("kiln.render_turntable", icon="RENDER_ANIMATION")
        layout.operator("kiln.import_video", icon="SEQUENCE")


classes = (KILN_UL_jobs, VIEW3D_PT_kiln, VIEW3D_PT_kiln_jobs, VIEW3D_PT_kiln_turntable)
