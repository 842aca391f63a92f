"""Kiln for Blender: registration only (the code lives in the sibling modules).

The bpy modules are imported inside register(), so `blender_addon.client`, `.protocol` and
`.jobflow` can be imported (and tested) in a Python without bpy.
"""

_registered: tuple = ()
_cli_handle = None


def _classes() -> tuple:
    from . import editing, localserver, operators, panels, preferences, properties

    return (
        *preferences.classes,
        *properties.classes,
        *operators.classes,
        *editing.classes,
        *localserver.classes,
        *panels.classes,
    )


def register():
    global _registered, _cli_handle
    import bpy

    from . import cli, previews, properties, runtime

    classes = _classes()
    for cls in classes:
        bpy.utils.register_class(cls)
    _registered = classes
    properties.register_properties()
    previews.register()
    for name, handler in runtime.HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        if handler not in handlers:
            handlers.append(handler)
    _cli_handle = bpy.utils.register_cli_command("kiln", cli.cli_command)


def unregister():
    global _registered, _cli_handle
    import bpy

    from . import localserver, operators, previews, properties, runtime

    localserver.shutdown()  # stops the local server unless "Keep Running" is set
    if _cli_handle is not None:
        bpy.utils.unregister_cli_command(_cli_handle)
        _cli_handle = None
    for name, handler in runtime.HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        if handler in handlers:
            handlers.remove(handler)
    runtime.shutdown()
    previews.unregister()
    operators.unregister_runtime()
    properties.unregister_properties()
    for cls in reversed(_registered):
        bpy.utils.unregister_class(cls)
    _registered = ()
