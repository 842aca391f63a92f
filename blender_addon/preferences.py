"""Add-on preferences: server URL, token, timeouts, output folder, the local server; and a client built from them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import bpy
from bpy.props import BoolProperty, FloatProperty, StringProperty

from . import localserver
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
    use_local_server: BoolProperty(
        name="Use Local Server",
        description="Connect to the Kiln server started from Blender (Start Local Server) instead of Server URL",
        default=False,
    )
    local_command: StringProperty(
        name="Python or Command",
        description=(
            "What runs the Kiln server: a Python with Kiln installed (it runs `-m server`) or a command "
            "such as kiln-server; empty: env KILN_SERVER_PYTHON, the checkout's .venv, or kiln-server on PATH"
        ),
        default="",
    )
    local_data_dir: StringProperty(
        name="Data Folder",
        description="The local server's jobs, files and log (empty: the extension's user folder)",
        subtype="DIR_PATH",
        default="",
    )
    local_extra_args: StringProperty(
        name="Extra Arguments",
        description="More kiln-server flags, e.g. --worker-threads 2 --text-model /models/sd21",
        default="",
    )
    local_keep_running: BoolProperty(
        name="Keep Running",
        description="Leave the local server running when Blender quits; the next Start takes it over",
        default=False,
        update=lambda self, _context: localserver.set_keep_running(self.local_keep_running),
    )

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
        draw_local_server(self, layout)


def draw_local_server(prefs, layout) -> None:
    """The "Local Server" box: settings, Start/Stop, status and the last log lines."""
    box = layout.box()
    box.label(text="Local Server", icon="CONSOLE")
    col = box.column()
    col.prop(prefs, "use_local_server")
    col.prop(prefs, "local_command")
    if not getattr(prefs, "local_command", "").strip():
        col.label(text=f"Runs: {localserver.describe_command()}")
    col.prop(prefs, "local_data_dir")
    col.prop(prefs, "local_extra_args")
    col.prop(prefs, "local_keep_running")
    st = localserver.status()
    row = box.row()
    if st.state in ("starting", "running"):
        row.operator("kiln.local_server_stop", icon="CANCEL")
    else:
        row.operator("kiln.local_server_start", icon="PLAY")
    icons = {"running": "CHECKMARK", "starting": "SORTTIME", "died": "ERROR"}
    box.label(text=st.message, icon=icons.get(st.state, "INFO"))
    if st.log_tail:
        log = box.column(align=True)
        log.scale_y = 0.7
        for line in st.log_tail[-6:]:
            log.label(text=line)


def client_settings(context=None) -> ClientSettings:
    """The preferences as plain data, or defaults when the add-on is not enabled.

    With "Use Local Server" on and the local server running, its URL and token replace Server
    URL and Token.
    """
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    if addon is None or addon.preferences is None:
        return ClientSettings()
    p = addon.preferences
    url, token = p.server_url, p.token
    # "Use Local Server": the URL and fresh token of the server Start Local Server started.
    local = localserver.current()
    if p.use_local_server and local is not None and localserver.is_running():
        url, token = local.url, local.token
    return ClientSettings(url, token, p.timeout, p.poll_interval, p.output_dir)


classes = (KILN_AddonPreferences,)
