"""Blender extension entry point: the add-on lives in blender_addon/; this file only forwards to it.

The manifest sits at the repository top (blender_manifest.toml), so the extension's package root is
this folder. Imports are deferred so that importing this file (e.g. by pytest) never needs bpy.
"""


def register():
    from .blender_addon import register as _register

    _register()


def unregister():
    from .blender_addon import unregister as _unregister

    _unregister()
