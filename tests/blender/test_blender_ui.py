"""The panels' and preferences' draw code against a recording layout: every property and operator exists.

Blender only runs draw() with a window, which the bpy module has not; a typo in a property or
operator name would otherwise show up first in an artist's sidebar as a console error.
"""

from __future__ import annotations

from tests.blender.bpy_harness import requires_bpy, run_bpy

pytestmark = requires_bpy


def test_draw_code_names_only_real_properties_and_operators(tmp_path):
    run = run_bpy(
        """
        from blender_addon import register, unregister

        class Problems(list):
            pass

        problems = Problems()
        seen = {"props": set(), "ops": set(), "progress": [], "labels": []}

        class OpProps:
            def __init__(self, idname):
                module, _, name = idname.partition(".")
                op = getattr(getattr(bpy.ops, module), name, None)
                self._rna = op.get_rna_type() if op is not None else None
            def __setattr__(self, name, value):
                if name != "_rna" and (self._rna is None or name not in self._rna.properties):
                    problems.append(f"operator property {name} missing")
                object.__setattr__(self, name, value)

        class Layout:
            use_property_split = use_property_decorate = enabled = False
            def _child(self, *a, **k):
                return Layout()
            row = column = box = split = _child
            def prop(self, data, name, **kw):
                if name not in data.bl_rna.properties:
                    problems.append(f"property {name} missing on {data}")
                seen["props"].add(name)
                seen.setdefault("by_mode", {}).setdefault(seen.get("mode"), []).append(name)
            def operator(self, idname, **kw):
                module, _, name = idname.partition(".")
                if not hasattr(getattr(bpy.ops, module), name) or not hasattr(bpy.types, "KILN_OT_" + name):
                    problems.append(f"operator {idname} missing")
                seen["ops"].add(idname)
                return OpProps(idname)
            def label(self, text="", icon="NONE", **kw):
                if not isinstance(text, str):
                    problems.append(f"label text {text!r}")
                seen["labels"].append(text)
            def progress(self, factor=0.0, type="BAR", text=""):
                seen["progress"].append((round(factor, 2), text))
            def template_list(self, listtype, list_id, data, propname, active_data, active_propname, **kw):
                if not hasattr(bpy.types, listtype):
                    problems.append(f"UIList {listtype} missing")
                for owner, name in ((data, propname), (active_data, active_propname)):
                    if name not in owner.bl_rna.properties:
                        problems.append(f"list property {name} missing")

        class Self:
            def __init__(self):
                self.layout = Layout()

        def main():
            register()
            ctx = bpy.context
            s = ctx.scene.kiln
            s.attributes.add().key = "hair_style"
            for state, progress, error in (("running", 0.42, ""), ("failed", 0.0, "boom"), ("succeeded", 1.0, "")):
                job = s.jobs.add()
                job.state, job.progress, job.error, job.prompt, job.stage = state, progress, error, "p", "sample"
            # The finished one was an avatar from a photo: how it was read (attributes.json).
            from blender_addon import runtime
            from blender_addon.protocol import AttributeReport
            done = s.jobs[-1]
            done.seed, done.object_name = 987654, "photo me"
            runtime.write_report(done, AttributeReport.from_dict({
                "attributes": {"skin_tone": "tan", "headwear": "cap"},
                "sources": {"skin_tone": "photo", "headwear": "prompt"},
                "confidences": {"skin_tone": 0.91},
                "photo": {"read": {"skin_tone": {"value": "tan", "confidence": 0.91, "used": True},
                                   "glasses": {"value": "round", "confidence": 0.3, "used": False}},
                          "warnings": ["the face is small in the photo"]},
                "unknown_words": ["zorble", "blip"],
                "conflicts": ["hair_color: 'red' and 'blue' both mentioned; using 'blue'"]}))
            s.active_job_index = 0  # a running job selected: the finished one shows in the main panel
            # The server's vocabulary as dropdowns, and an imported avatar selected (Variant).
            from blender_addon import editing
            editing.sync_vocabulary(s, {"glasses": ("none", "round"), "hair_color": ("black", "red")})
            avatar = bpy.data.objects.new("an avatar", None)
            ctx.scene.collection.objects.link(avatar)
            avatar["kiln_job_id"], avatar["kiln_kind"], avatar["kiln_seed"] = "0" * 32, "avatar", 3
            avatar["kiln_attributes"] = {"glasses": "none", "hair_color": "black"}
            ctx.view_layer.objects.active = avatar
            s.variant_attribute = "hair_color"
            for mode in ("OBJECT", "AVATAR", "PHOTO"):
                s.mode = seen["mode"] = mode
                for panel in ("VIEW3D_PT_kiln", "VIEW3D_PT_kiln_jobs", "VIEW3D_PT_kiln_turntable"):
                    getattr(bpy.types, panel).draw(Self(), ctx)
            ui_list = bpy.types.KILN_UL_jobs
            for index, job in enumerate(s.jobs):
                ui_list.draw_item(None, ctx, Layout(), s, job, 0, s, "active_job_index", index)
            from blender_addon.preferences import KILN_AddonPreferences as prefs
            fake = Self()
            fake.bl_rna = prefs.bl_rna
            for name in ("server_url", "token", "timeout", "poll_interval", "output_dir", "status"):
                setattr(fake, name, prefs.bl_rna.properties[name].default)
            prefs.draw(fake, ctx)
            unregister()
            return {"problems": problems, "props": sorted(seen["props"]), "ops": sorted(seen["ops"]),
                    "progress": seen["progress"], "labels": seen["labels"], "by_mode": {m: seen["by_mode"][m] for m in ("OBJECT", "AVATAR", "PHOTO")}}
        """,
        tmp_path,
    )
    d = run.data
    assert d["problems"] == []
    assert d["ops"] == [
        "kiln.attribute_add",
        "kiln.attribute_remove",
        "kiln.cancel",
        "kiln.check_server",
        "kiln.generate",
        "kiln.import_result",
        "kiln.import_video",
        "kiln.job_remove",
        "kiln.local_server_start",
        "kiln.pin_attribute",
        "kiln.refresh_attributes",
        "kiln.render_turntable",
        "kiln.resume_jobs",
        "kiln.unpin_attributes",
        "kiln.use_seed",
        "kiln.variant",
    ]
    # Every setting of the issue is on the panel.
    for name in (
        "mode",
        "prompt",
        "negative_prompt",
        "seed",
        "preset",
        "photo_path",
        "resolution",
        "texture_size",
    ):
        assert name in d["props"]
    assert {
        "key",
        "value",
        "turntable_engine",
        "turntable_frames",
        "image_plane",
        "server_url",
        "token",
    } <= set(d["props"])
    # The prompt is sent in every mode (with a photo it overrides what the photo shows), so every
    # mode shows it: a hidden, stale prompt would change a photo avatar unseen.
    for mode, names in d["by_mode"].items():
        assert "prompt" in names, mode
    assert "photo_path" in d["by_mode"]["PHOTO"] and "photo_path" not in d["by_mode"]["AVATAR"]
    # Only the running job draws a progress bar, with its stage and percentage.
    assert d["progress"] == [[0.42, "sample 42%"]]

    # The newest finished job shows how it was made: the seed the server used (with Use Seed),
    # the attributes with where each came from, the unsure reading, the words not understood,
    # the conflict and the photo warning. Once per draw of the main panel (three modes).
    made_with = [
        "Last: photo me",
        "Seed 987654",
        "Made with:",
        "skin_tone: tan (photo 91%)",
        "headwear: cap (prompt)",
        "glasses: round (photo 30%, not used: the model chose)",
        "Not understood: zorble, blip",
        "Conflict: hair_color: 'red' and 'blue' both mentioned; using 'blue'",
        "Photo: the face is small in the photo",
    ]
    labels = d["labels"]
    start = labels.index("Last: photo me")
    assert labels[start : start + len(made_with)] == made_with
    assert labels.count("Last: photo me") == 3
