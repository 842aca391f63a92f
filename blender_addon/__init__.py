"""Kiln for Blender: registration only (the code lives in the sibling modules)."""

import bpy

from . import cli, operators, panels, preferences, properties, runtime

classes = (
    *preferences.classes,
    *properties.classes,
    *operators.classes,
    *panels.classes,
)

_cli_handle = None


def register():
    global _cli_handle
    for cls in classes:
        bpy.utils.register_class(cls)
    properties.register_properties()
    if runtime.on_load_post not in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.append(runtime.on_load_post)
    _cli_handle = bpy.utils.register_cli_command("kiln", cli.cli_command)


def unregister():
    global _cli_handle
    if _cli_handle is not None:
        bpy.utils.unregister_cli_command(_cli_handle)
        _cli_handle = None
    if runtime.on_load_post in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(runtime.on_load_post)
    runtime.shutdown()
    operators.unregister_runtime()
    properties.unregister_properties()
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
