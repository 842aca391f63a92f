"""A Kiln server started from Blender: Preferences > Add-ons > Kiln > Local server, and ``--start-server``.

The server runs as ``<python> -m server --host 127.0.0.1 --port <free port> --data-dir <folder>
--token-file <folder>/local-server.token`` (or ``kiln-server ...``) in its own process group, with a
fresh token per start that never appears on the command line. Which command runs it:

1. the preference "Python or Command" (a Python with Kiln installed, or a command such as
   ``kiln-server`` or ``/opt/kiln/.venv/bin/python -m server``), else
2. env ``KILN_SERVER_PYTHON`` (a Python) or ``KILN_SERVER_COMMAND`` (a command), else
3. the checkout's ``.venv`` Python when the add-on is loaded from a Kiln checkout, else
4. ``kiln-server`` on PATH (what ``pip install`` of Kiln puts there).

Blender's own Python (``sys.executable`` inside Blender) is never used: it lacks torch and the
server's packages. Its log goes to ``<data folder>/local-server.log``; ``local-server.json`` records
the pid, URL and token file, so a server left running ("Keep Running") is taken over by the next
Start instead of failing on the data folder's lock.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import bpy

REPO_ROOT = Path(__file__).resolve().parents[1]
LOG_NAME = "local-server.log"
TOKEN_NAME = "local-server.token"
STATE_NAME = "local-server.json"
START_TIMEOUT = 120.0
"""Seconds a start may take before it counts as failed (the first start imports torch)."""

STOPPED, STARTING, RUNNING, DIED = "stopped", "starting", "running", "died"


class LocalServerError(Exception):
    """The local server cannot be started; the message says what to set."""


@dataclass
class LocalStatus:
    """What the panel shows about the local server."""

    state: str = STOPPED
    """``stopped``, ``starting``, ``running`` or ``died``."""
    message: str = "Local server stopped"
    """One sentence for a person."""
    log_tail: list[str] = field(default_factory=list)
    """The last lines of its log (empty before the first start)."""
    url: str = ""
    """``http://127.0.0.1:<port>`` while starting or running, else the last one."""
    pid: int | None = None
    exit_code: int | None = None
    """The exit status of a server that died (negative: the signal that killed it)."""


def _python_like(token: str) -> bool:
    return Path(token).name.lower().startswith("python")


def _venv_python(root: Path) -> Path | None:
    for candidate in (root / ".venv" / "bin" / "python", root / ".venv" / "Scripts" / "python.exe"):
        if candidate.is_file():
            return candidate
    return None


def resolve_command(setting: str = "") -> tuple[list[str], str]:
    """(argv prefix that runs the server, where it came from); raises LocalServerError when none."""
    setting = setting.strip()
    if setting:
        argv = shlex.split(setting, posix=os.name != "nt")
        if len(argv) == 1 and _python_like(argv[0]):
            argv += ["-m", "server"]
        return argv, "preferences"
    if os.environ.get("KILN_SERVER_PYTHON"):
        return [os.environ["KILN_SERVER_PYTHON"], "-m", "server"], "KILN_SERVER_PYTHON"
    if os.environ.get("KILN_SERVER_COMMAND"):
        return shlex.split(os.environ["KILN_SERVER_COMMAND"], posix=os.name != "nt"), "KILN_SERVER_COMMAND"
    venv = _venv_python(REPO_ROOT)
    if venv is not None and (REPO_ROOT / "server" / "__main__.py").is_file():
        return [str(venv), "-m", "server"], "the Kiln checkout"
    found = shutil.which("kiln-server")
    if found:
        return [found], "PATH"
    raise LocalServerError(
        "no Kiln server found to start: set Python or Command in Preferences > Add-ons > Kiln > "
        "Local server (a Python with Kiln installed, or the kiln-server command)"
    )


def describe_command(setting: str = "") -> str:
    """The command that Start would run, for the preferences ("not found: ..." when none)."""
    try:
        argv, source = resolve_command(setting)
    except LocalServerError:
        return "not found: set Python or Command"
    return f"{' '.join(argv)} (from {source})"


def default_data_dir() -> Path:
    from .preferences import ADDON_ID

    try:
        return Path(bpy.utils.extension_path_user(ADDON_ID, path="server_data", create=True))
    except (ValueError, AttributeError):  # loaded from a checkout by a script: not an extension
        return Path(bpy.utils.user_resource("DATAFILES", path="kiln_server_data", create=True))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate it on Windows
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, run by someone else
        return True
    return True


def health(url: str, token: str, timeout: float = 1.0) -> bool:
    """True when ``GET url/v1/health`` answers ``{"status": "ok"}``."""
    request = urllib.request.Request(url + "/v1/health", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read()).get("status") == "ok"
    except (OSError, ValueError, AttributeError, urllib.error.URLError):
        return False


class LocalServer:
    """One server process: start, poll, wait, stop; its log and state file in ``data_dir``."""

    def __init__(self, command: list[str], data_dir: Path, extra_args: list[str] | None = None):
        self.command = list(command)
        self.data_dir = Path(data_dir)
        self.extra_args = list(extra_args or [])
        self.keep_running = False
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.url = ""
        self.token = ""
        self.state = STOPPED
        self.exit_code: int | None = None
        self.error = ""
        self._last_health = 0.0

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_NAME

    # -- start -----------------------------------------------------------------------------------

    def start(self) -> LocalServer:
        """Launch the process (returns at once; ``poll``/``wait_ready`` say when it answers)."""
        if self.state in (STARTING, RUNNING) and self._alive():
            return self
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as ex:
            raise LocalServerError(
                f"cannot use {self.data_dir} as the local server's data folder ({ex}); pick another"
            ) from None
        if self._adopt():
            return self
        import secrets

        self.token = secrets.token_hex(16)
        token_file = self.data_dir / TOKEN_NAME
        token_file.unlink(missing_ok=True)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.token + "\n")
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        argv = [*self.command, "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(self.data_dir)]
        argv += ["--token-file", str(token_file), *self.extra_args]
        env = {k: v for k, v in os.environ.items() if k not in ("KILN_TOKEN", "PYTHONHOME")}
        env["PYTHONUNBUFFERED"] = "1"
        cwd = REPO_ROOT if (REPO_ROOT / "server" / "__main__.py").is_file() else self.data_dir
        kwargs: dict = {"start_new_session": True}
        if os.name == "nt":
            kwargs = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
        with open(self.log_path, "wb") as log:
            try:
                self.proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    **kwargs,
                )
            except OSError as ex:
                self.state, self.error = STOPPED, str(ex)
                raise LocalServerError(
                    f"cannot run {argv[0]} ({ex}); fix Python or Command in Preferences > Add-ons > Kiln"
                ) from None
        self.pid, self.state, self.exit_code, self.error = self.proc.pid, STARTING, None, ""
        self._write_state()
        _LIVE.add(self)
        return self

    def _write_state(self) -> None:
        state = {"pid": self.pid, "url": self.url, "token_file": str(self.data_dir / TOKEN_NAME)}
        (self.data_dir / STATE_NAME).write_text(json.dumps(state))

    def _adopt(self) -> bool:
        """Take over a server this data folder's last Start left running ("Keep Running")."""
        try:
            state = json.loads((self.data_dir / STATE_NAME).read_text())
            pid, url = int(state["pid"]), str(state["url"])
            token = Path(state["token_file"]).read_text().splitlines()[0].strip()
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return False
        if not _pid_alive(pid) or not health(url, token, timeout=1.0):
            return False
        self.proc, self.pid, self.url, self.token = None, pid, url, token
        self.state, self.exit_code, self.error = RUNNING, None, ""
        _LIVE.add(self)
        return True

    # -- state -----------------------------------------------------------------------------------

    def _alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and _pid_alive(self.pid)

    def poll(self, check_health: bool = True) -> str:
        """Update and return the state: a process that exited is ``died``; one that answers, ``running``."""
        if self.state in (STARTING, RUNNING) and not self._alive():
            self.exit_code = self.proc.returncode if self.proc is not None else None
            self.state = DIED
            _LIVE.discard(self)
        elif self.state == STARTING and check_health:
            now = time.monotonic()
            if now - self._last_health >= 0.25:
                self._last_health = now
                if health(self.url, self.token, timeout=0.5):
                    self.state = RUNNING
        return self.state

    def wait_ready(self, timeout: float = START_TIMEOUT) -> LocalStatus:
        """Block until the server answers /v1/health, dies, or ``timeout`` passes (then still ``starting``)."""
        deadline = time.monotonic() + timeout
        while self.poll() == STARTING and time.monotonic() < deadline:
            time.sleep(0.1)
            self._last_health = 0.0
        return self.status()

    def log_tail(self, lines: int = 8) -> list[str]:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 16384))
                text = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if line.strip()][-lines:]

    def status(self, lines: int = 8, check_health: bool = True) -> LocalStatus:
        state = self.poll(check_health)
        tail = self.log_tail(lines)
        if state == RUNNING:
            message = f"Local server running at {self.url} (pid {self.pid})"
        elif state == STARTING:
            message = f"Local server starting at {self.url}..."
        elif state == DIED:
            code = f"exit code {self.exit_code}" if self.exit_code is not None else "it exited"
            last = f": {tail[-1]}" if tail else ""
            message = f"Local server stopped on its own ({code}){last}"
        else:
            message = f"Local server stopped{f': {self.error}' if self.error else ''}"
        return LocalStatus(state, message, tail, self.url, self.pid, self.exit_code)

    # -- stop ------------------------------------------------------------------------------------

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the server's process group (its workers too), SIGKILL after ``timeout`` s."""
        _LIVE.discard(self)
        if self._alive() and self.pid is not None:
            self._signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self._alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._alive():
                self._signal(getattr(signal, "SIGKILL", signal.SIGTERM))
                if self.proc is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.proc.wait(5)
        self.state, self.exit_code = STOPPED, None  # also clears "died": Stop was pressed
        (self.data_dir / STATE_NAME).unlink(missing_ok=True)

    def _signal(self, sig: int) -> None:
        try:
            if os.name == "nt":
                if self.proc is not None:
                    self.proc.terminate() if sig == signal.SIGTERM else self.proc.kill()
                else:
                    os.kill(self.pid, sig)
            else:
                os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError, OSError):
            pass


_LIVE: set[LocalServer] = set()
"""Servers this process started or took over and has not stopped: stopped at exit unless kept."""


@atexit.register
def _stop_at_exit() -> None:
    for server in list(_LIVE):
        if not server.keep_running:
            server.stop(timeout=5.0)


# -- the add-on's one local server (Preferences > Add-ons > Kiln) -----------------------------------

_server: LocalServer | None = None


def _prefs(context=None):
    from .preferences import ADDON_ID

    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    return None if addon is None else addon.preferences


def from_preferences(context=None, data_dir: Path | None = None) -> LocalServer:
    """A LocalServer configured from the preferences (defaults when the add-on is not enabled).

    ``data_dir`` replaces the preference's data folder (the batch's own server).
    """
    prefs = _prefs(context)
    setting = getattr(prefs, "local_command", "") if prefs is not None else ""
    folder = getattr(prefs, "local_data_dir", "") if prefs is not None else ""
    extra = getattr(prefs, "local_extra_args", "") if prefs is not None else ""
    command, _ = resolve_command(setting)
    if data_dir is None:
        data_dir = Path(bpy.path.abspath(folder)) if folder else default_data_dir()
    server = LocalServer(command, data_dir, shlex.split(extra, posix=os.name != "nt"))
    server.keep_running = bool(getattr(prefs, "local_keep_running", False))
    return server


def current() -> LocalServer | None:
    """The add-on's local server (None before the first Start)."""
    return _server


def status(context=None) -> LocalStatus:
    """State, a sentence, the log tail and URL of the add-on's local server.

    Cheap enough for a draw function: in interactive Blender the timer asks /v1/health, so this
    only checks that the process lives; headless (no timers) it asks itself, at most every 0.25 s.
    """
    if _server is None:
        return LocalStatus()
    return _server.status(check_health=bpy.app.background)


def is_running() -> bool:
    """True while the add-on's local server runs (not while it is starting)."""
    return _server is not None and _server.poll(check_health=False) == RUNNING


def should_offer_start(context=None) -> bool:
    """True when Use Local Server is on and it is neither running nor starting: Generate offers Start."""
    prefs = _prefs(context)
    if prefs is None or not getattr(prefs, "use_local_server", False):
        return False
    return _server is None or _server.poll(check_health=False) not in (STARTING, RUNNING)


def start(context=None) -> LocalStatus:
    """Start the local server from the preferences (a running one is kept); returns at once.

    In interactive Blender a timer follows it until it answers or dies and redraws the UI;
    headless callers use ``wait_ready``. Raises LocalServerError when it cannot be launched.
    """
    global _server
    if _server is not None and _server.poll(check_health=False) in (STARTING, RUNNING):
        return _server.status()
    server = from_preferences(context)
    server.start()
    _server = server
    prefs = _prefs(context)
    if prefs is not None and hasattr(prefs, "use_local_server"):
        prefs.use_local_server = True
    if not bpy.app.background and not bpy.app.timers.is_registered(_follow):
        bpy.app.timers.register(_follow, first_interval=0.3, persistent=True)
    return server.status()


def wait_ready(timeout: float = START_TIMEOUT) -> LocalStatus:
    """Block until the add-on's local server answers (or dies, or ``timeout`` passes)."""
    if _server is None:
        return LocalStatus()
    return _server.wait_ready(timeout)


def stop() -> LocalStatus:
    """Stop the add-on's local server (also one kept running); returns the new status."""
    if _server is not None:
        _server.stop()
        _tag_redraw()
    return status()


def set_keep_running(keep: bool) -> None:
    if _server is not None:
        _server.keep_running = keep


def shutdown() -> None:
    """On unregister: stop the local server unless "Keep Running" is set."""
    if bpy.app.timers.is_registered(_follow):
        bpy.app.timers.unregister(_follow)
    if _server is not None and not _server.keep_running:
        _server.stop()


def _tag_redraw() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    for window in getattr(wm, "windows", ()):
        for area in window.screen.areas:
            if area.type in ("PREFERENCES", "VIEW_3D", "STATUSBAR"):
                area.tag_redraw()


def _follow() -> float | None:
    """Timer: poll the local server, redraw when its state changes; ends once stopped or died."""
    if _server is None:
        return None
    before = _server.state
    state = _server.poll()
    if state != before or state == STARTING:
        _tag_redraw()
    if state == STARTING:
        return 0.3
    return 2.0 if state == RUNNING else None


# -- messages ----------------------------------------------------------------------------------------

_UNREACHABLE = ("cannot reach", "refused", "unreachable", "connection reset", "errno 111", "no route")


def connection_hint(error_text: str, context=None) -> str:
    """A "cannot reach the server" error as a sentence about the local server; others unchanged."""
    text = str(error_text)
    if not any(marker in text.lower() for marker in _UNREACHABLE):
        return text
    st = status(context)
    where = "Preferences > Add-ons > Kiln > Local server"
    if st.state == DIED:
        last = f" Its last log line: {st.log_tail[-1].rstrip('.')}." if st.log_tail else ""
        code = f" (exit code {st.exit_code})" if st.exit_code is not None else ""
        return (
            f"The local Kiln server stopped on its own{code}.{last} "
            f"Start Local Server ({where}) starts it again."
        )
    if st.state == STARTING:
        return "The local Kiln server is still starting; try again in a few seconds."
    if st.state == RUNNING:
        return f"The local Kiln server at {st.url} did not answer; it may be busy. ({text})"
    prefs = _prefs(context)
    if prefs is not None and getattr(prefs, "use_local_server", False):
        return f"The local Kiln server is not running. Start Local Server ({where}) starts it."
    return (
        "No Kiln server is running at the Server URL. Start Local Server "
        f"({where}) runs one on this computer, or start yours and check the URL."
    )


# -- operators ---------------------------------------------------------------------------------------


class KILN_OT_local_server_start(bpy.types.Operator):
    """Start a Kiln server on this computer and connect the add-on to it"""

    bl_idname = "kiln.local_server_start"
    bl_label = "Start Local Server"

    def execute(self, context):
        try:
            st = start(context)
        except LocalServerError as ex:
            self.report({"ERROR"}, f"Kiln: {ex}")
            return {"CANCELLED"}
        if bpy.app.background:  # a script: come back once it answers
            st = wait_ready()
            if st.state != RUNNING:
                self.report({"ERROR"}, f"Kiln: {st.message}")
                return {"CANCELLED"}
        self.report({"INFO"}, f"Kiln: {st.message}")
        _tag_redraw()
        return {"FINISHED"}


class KILN_OT_local_server_stop(bpy.types.Operator):
    """Stop the Kiln server started from Blender"""

    bl_idname = "kiln.local_server_stop"
    bl_label = "Stop Local Server"

    def execute(self, context):
        st = stop()
        self.report({"INFO"}, f"Kiln: {st.message}")
        return {"FINISHED"}


classes = (KILN_OT_local_server_start, KILN_OT_local_server_stop)
