"""Add-on preferences: server URL, token, timeouts, output folder; and a client built from them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import bpy
from bpy.props import FloatProperty, StringProperty

from .client import DEFAULT_URL, KilnClient, check_online_access

# The add-on's module name, which keys its preferences. Installed as an extension, this
# package is `bl_ext.<repo>.kiln.blender_addon` under the repository-top shim `__init__.py`,
# so the add-on is the parent package; loaded straight from the repo it is `blender_addon`.
_PACKAGE = __package__ or "blender_addon"
ADDON_ID = _PACKAGE.removesuffix(".blender_addon") if _PACKAGE.endswith(".blender_addon") else _PACKAGE


@dataclass
class ClientSettings:
    """Preferences as plain data (defaults when the add-on is not enabled, e.g. in scripts)."""

    server_url: str = DEFAULT_URL
    """Base URL of the Kiln server."""
    token: str = ""
    """Bearer token; empty for a loopback server without one."""
    timeout: float = 10.0
    """Seconds to wait for one answer."""
    poll_interval: float = 0.5
    """Seconds between job status polls."""
    output_dir: str = ""
    """Where downloads and renders go; empty = Blender's extension user folder."""

    def client(self, online_access: bool | None = None) -> KilnClient:
        """A client for these settings; refuses a remote URL while online access is off."""
        allowed = bpy.app.online_access if online_access is None else online_access
        check_online_access(self.server_url, allowed)
        return KilnClient(self.server_url, self.token, timeout=self.timeout)

    def resolved_output_dir(self) -> Path:
        if self.output_dir:
            return Path(bpy.path.abspath(self.output_dir))
        return default_output_dir()


def default_output_dir() -> Path:
    """``<extension user path>/outputs``; Blender's user data folder when not installed as an extension."""
    try:
        return Path(bpy.utils.extension_path_user(ADDON_ID, path="outputs", create=True))
    except (ValueError, AttributeError):
        # Loaded from the repo by a script: not an extension. (Not bpy.app.tempdir: Blender deletes it.)
        return Path(bpy.utils.user_resource("DATAFILES", path="kiln_outputs", create=True))


class KILN_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    server_url: StringProperty(
        name="Server URL",
        description="Base URL of the Kiln server; a server on this computer works without online access",
        default=DEFAULT_URL,
    )
    token: StringProperty(
        name="Token",
        description="Bearer token of the server (needed when it is not on this computer)",
        subtype="PASSWORD",
        default="",
    )
    timeout: FloatProperty(
        name="Timeout",
        description="Seconds to wait for the server to answer one request",
        default=10.0,
        min=0.5,
        max=600.0,
        unit="TIME_ABSOLUTE",
    )
    poll_interval: FloatProperty(
        name="Poll Interval",
        description="Seconds between job status checks",
        default=0.5,
        min=0.1,
        max=30.0,
    )
    output_dir: StringProperty(
        name="Output Folder",
        description="Where generated assets and turntables are saved (empty: the extension's user folder)",
        subtype="DIR_PATH",
        default="",
    )
    status: StringProperty(name="Status", default="", options={"SKIP_SAVE"})

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        col = layout.column()
        col.prop(self, "server_url")
        col.prop(self, "token")
        col.prop(self, "timeout")
        col.prop(self, "poll_interval")
        col.prop(self, "output_dir")
        row = layout.row()
        row.operator("kiln.check_server", icon="URL")
        if self.status:
            layout.label(text=self.status)
        if not bpy.app.online_access:
            layout.label(text="Online access is off: only a server on this computer can be used", icon="INFO")


def client_settings(context=None) -> ClientSettings:
    """The preferences as plain data, or defaults when the add-on is not enabled."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    if addon is None or addon.preferences is None:
        return ClientSettings()
    p = addon.preferences
    return ClientSettings(p.server_url, p.token, p.timeout, p.poll_interval, p.output_dir)


classes = (KILN_AddonPreferences,)
