"""Live previews: a job's progress images reach the panel (bpy.utils.previews) while it runs,
and the status bar's progress line draws."""

from __future__ import annotations

import pytest

from tests.blender.bpy_harness import KilnServer, requires_bpy, run_bpy

pytestmark = requires_bpy


@pytest.fixture
def preview_server(tmp_path):
    env = {"KILN_TEST_SLOW_S": "3", "KILN_TEST_PREVIEW_S": "0.5"}
    server = KilnServer(tmp_path / "server_data", env=env).start()
    yield server
    server.stop()


def test_previews_update_the_panel_while_the_job_runs(preview_server, tmp_path):
    run = run_bpy(
        f"""
        from pathlib import Path
        from blender_addon import register, unregister, runtime, previews, panels
        from blender_addon.preferences import ClientSettings
        from blender_addon.protocol import JobRequest, OutputOptions

        class Layout:  # records what a draw function asks for
            def __init__(self):
                self.calls = []
            def row(self, **kw):
                return self
            def box(self):
                return self
            def label(self, text="", icon="NONE", icon_value=0):
                self.calls.append(("label", text, icon_value))
            def progress(self, factor=0.0, type="BAR", text=""):
                self.calls.append(("progress", round(factor, 3)))
            def template_icon(self, icon_value=0, scale=1.0):
                self.calls.append(("icon", icon_value))

        class Header:
            def __init__(self):
                self.layout = Layout()

        def main():
            register()
            scene = bpy.context.scene
            request = JobRequest("kiln_test_box", "a box __slow__", output=OutputOptions(64, 256, 0, 64))
            item = runtime.new_job_item(scene, request, "a box")
            spec = runtime.make_spec(item, request, None, Path({str(tmp_path / "out")!r}))
            seen, status, drawn = [], [], []
            apply = runtime.apply_update

            def watch(context, scene_, item_, update):
                obj = apply(context, scene_, item_, update)
                if not update.done and item_.preview_path:
                    # The panel's preview (background Blender loads it but makes no icon).
                    preview = previews.preview_of(item_)
                    key = next(k for k, v in previews._previews().items() if v == preview)
                    pixel = round((preview.image_pixels[0] & 0xFF) / 255, 3)
                    if not seen or seen[-1][1] != pixel:
                        seen.append((key, pixel, list(preview.image_size), len(previews._previews())))
                    status.append(previews.status_text(bpy.context))
                    header = Header()
                    previews.draw_status_bar(header, bpy.context)
                    drawn.append(header.layout.calls)
                    layout = Layout()
                    panels.draw_preview(layout, item_)
                    drawn.append(layout.calls)
                return obj

            runtime.apply_update = watch
            try:
                final = runtime.run_blocking(
                    bpy.context, scene, item, spec, settings=ClientSettings({preview_server.url!r}, poll_interval=0.1)
                )
            finally:
                runtime.apply_update = apply
            after = previews.status_text(bpy.context)
            state = item.state
            unregister()
            return {{"ok": final.ok, "why": final.error, "seen": seen, "status": status[:3], "after": after,
                     "drawn": drawn[:2], "state": state}}
        """,
        tmp_path,
    )
    d = run.data
    assert d["ok"] and d["state"] == "succeeded", d
    keys = [s[0] for s in d["seen"]]
    pixels = [s[1] for s in d["seen"]]
    # At least two different images reached the panel's previews before the job finished, each
    # loaded anew (its own key) in place of the last (one preview per job).
    assert len(d["seen"]) >= 2 and len(set(pixels)) >= 2, d["seen"]
    assert len(set(keys)) == len(keys) and all(s[2] == [8, 8] and s[3] == 1 for s in d["seen"]), d["seen"]
    assert pixels == sorted(pixels)  # the engine's images get lighter step by step
    # The status bar's line while it ran, and nothing once it finished.
    assert d["status"][0].startswith("Kiln: a box, wait"), d["status"]
    assert d["after"] == ""
    bar, panel = d["drawn"]
    assert bar[0][0] == "label" and bar[0][1].startswith("Kiln: a box") and bar[1][0] == "progress"
    assert panel == []  # no icon to draw in background Blender, and no empty box either
