"""The local server started from Blender (Preferences > Add-ons > Kiln > Local server) and ``--start-server``.

Each bpy script enables the add-on from the checkout, so the command Start runs is the checkout's
``.venv`` Python (``python -m server``); the test engine reaches it through ``KILN_EXTRA_ENGINES``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.blender.bpy_harness import TEST_ENGINE, requires_bpy, run_bpy

pytestmark = requires_bpy

ENV = {"KILN_EXTRA_ENGINES": TEST_ENGINE}

PRELUDE = """
import os, time, json, urllib.request, urllib.error
import addon_utils
addon_utils.enable("blender_addon", default_set=True)
from blender_addon import localserver, preferences

def prefs():
    return bpy.context.preferences.addons["blender_addon"].preferences

def get(url, token="", path="/v1/health"):
    req = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            return json.loads(r.read())
    except (OSError, urllib.error.URLError) as ex:
        return {"error": str(ex)}

def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) counts as gone.
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"

class Layout:
    # Records what a draw function puts on the preferences (labels and operator buttons).
    def __init__(self, seen):
        self.seen = seen
    def _child(self, *a, **k):
        return Layout(self.seen)
    row = column = box = _child
    def prop(self, data, name, **kw):
        assert name in data.bl_rna.properties, name
        self.seen.append(("prop", name))
    def operator(self, idname, **kw):
        self.seen.append(("op", idname))
    def label(self, text="", **kw):
        self.seen.append(("label", text))

def draw_prefs():
    seen = []
    preferences.draw_local_server(prefs(), Layout(seen))
    return seen

def worker_pids(url, token):
    return [w["pid"] for w in get(url, token, "/v1/info").get("workers", []) if w.get("pid")]
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_start_and_stop_from_preferences(tmp_path):
    data = tmp_path / "local_data"
    body = (
        PRELUDE
        + f"""
def main():
    p = prefs()
    p.local_data_dir = {str(data)!r}
    before = preferences.client_settings().server_url
    offer_before = localserver.should_offer_start()
    p.use_local_server = True
    offer_on = localserver.should_offer_start()
    p.use_local_server = False
    drawn_stopped = draw_prefs()
    t = time.monotonic()
    bpy.ops.kiln.local_server_start()
    started_s = time.monotonic() - t
    st = localserver.status()
    server = localserver.current()
    settings = preferences.client_settings()
    with open(f"/proc/{{st.pid}}/cmdline", "rb") as fh:
        argv = fh.read().split(b"\\0")
    facts = {{
        "before": before, "state": st.state, "url": st.url, "pid": st.pid, "started_s": started_s,
        "health": get(st.url, server.token), "use_local": p.use_local_server,
        "settings_url": settings.server_url, "settings_token": settings.token,
        "token_on_argv": server.token.encode() in b" ".join(argv),
        "info_version": settings.client().info().version,
        "workers": worker_pids(st.url, server.token),
        "log_tail": st.log_tail, "message": st.message,
        "offer": [offer_before, offer_on, localserver.should_offer_start()],
        "drawn_stopped": drawn_stopped, "drawn_running": draw_prefs(), "follow_running": localserver._follow(),
    }}
    bpy.ops.kiln.local_server_stop()
    after = localserver.status()
    facts.update(after_state=after.state, after_message=after.message,
                 pid_alive=alive(st.pid), workers_alive=[alive(w) for w in facts["workers"]],
                 health_after=get(st.url, server.token),
                 settings_after=preferences.client_settings().server_url,
                 follow_after=localserver._follow())
    return facts
"""
    )
    data_out = run_bpy(body, tmp_path, timeout=120, env=ENV).data
    assert data_out["state"] == "running", data_out["message"]
    assert data_out["url"].startswith("http://127.0.0.1:") and data_out["url"] != data_out["before"]
    assert data_out["health"] == {"status": "ok"} or data_out["health"].get("status") == "ok"
    assert data_out["started_s"] < 60
    # Start switches the add-on to it: its URL and its fresh token, which is not on the command line.
    assert data_out["use_local"] is True
    assert data_out["settings_url"] == data_out["url"] and len(data_out["settings_token"]) == 32
    assert data_out["token_on_argv"] is False
    assert data_out["info_version"]
    assert (data / "local-server.log").is_file() and data_out["log_tail"]
    assert oct((data / "local-server.token").stat().st_mode & 0o777) == oct(0o600)
    # Stop: the process and its workers are gone, nothing answers, the add-on is back on Server URL.
    assert data_out["after_state"] == "stopped" and data_out["after_message"] == "Local server stopped"
    assert data_out["pid_alive"] is False and not _alive(data_out["pid"])
    assert data_out["workers"] and data_out["workers_alive"] == [False] * len(data_out["workers"])
    assert "error" in data_out["health_after"]
    assert data_out["settings_after"] == data_out["before"]
    # Generate offers Start only with Use Local Server on and no server running.
    assert data_out["offer"] == [False, True, False]
    # The preferences box: the settings, Start while stopped, Stop, the status and log while running.
    stopped = [tuple(x) for x in data_out["drawn_stopped"]]
    running = [tuple(x) for x in data_out["drawn_running"]]
    for name in ("use_local_server", "local_command", "local_data_dir", "local_keep_running"):
        assert ("prop", name) in stopped
    assert ("op", "kiln.local_server_start") in stopped and ("op", "kiln.local_server_stop") not in stopped
    assert ("label", "Local server stopped") in stopped
    assert any(x[0] == "label" and x[1].startswith("Runs: ") and "-m server" in x[1] for x in stopped)
    assert ("op", "kiln.local_server_stop") in running and ("op", "kiln.local_server_start") not in running
    assert ("label", data_out["message"]) in running
    assert ("label", data_out["log_tail"][-1]) in running
    # The UI timer keeps following a running server, and ends once it is stopped.
    assert data_out["follow_running"] == 2.0 and data_out["follow_after"] is None


def test_unregister_stops_it_unless_kept(tmp_path):
    body = (
        PRELUDE
        + f"""
def main():
    prefs().local_data_dir = {str(tmp_path / "local_data")!r}
    localserver.start()
    first = localserver.wait_ready(60)
    addon_utils.disable("blender_addon", default_set=True)  # what quitting Blender does to the add-on
    facts = {{"first": first.state, "first_pid": first.pid, "first_alive": alive(first.pid),
              "first_health": get(first.url)}}
    addon_utils.enable("blender_addon", default_set=True)
    p = prefs()
    p.local_data_dir = {str(tmp_path / "local_data")!r}
    p.local_keep_running = True
    localserver.start()
    kept = localserver.wait_ready(60)
    addon_utils.disable("blender_addon", default_set=True)
    facts.update(kept_pid=kept.pid, kept_alive=alive(kept.pid))
    # The next Start takes the kept server over (same process) instead of failing on its lock.
    addon_utils.enable("blender_addon", default_set=True)
    prefs().local_data_dir = {str(tmp_path / "local_data")!r}
    localserver.start()
    again = localserver.wait_ready(60)
    facts.update(again_state=again.state, again_pid=again.pid,
                 again_health=get(again.url, localserver.current().token))
    localserver.stop()
    facts["again_alive"] = alive(again.pid)
    return facts
"""
    )
    d = run_bpy(body, tmp_path, timeout=120, env=ENV).data
    assert d["first"] == "running"
    assert d["first_alive"] is False and "error" in d["first_health"]
    assert d["kept_alive"] is True and d["kept_pid"] != d["first_pid"]
    assert d["again_state"] == "running" and d["again_pid"] == d["kept_pid"]
    assert d["again_health"].get("status") == "ok"
    assert d["again_alive"] is False and not _alive(d["kept_pid"])


def test_a_server_that_dies_is_reported_with_its_log(tmp_path):
    body = (
        PRELUDE
        + f"""
import signal
from blender_addon.client import KilnClient, KilnError

def main():
    p = prefs()
    p.local_data_dir = {str(tmp_path / "bad")!r}
    p.local_extra_args = "--max-queued many"   # the server refuses it and exits
    localserver.start()
    bad = localserver.wait_ready(60)
    facts = {{"bad": [bad.state, bad.exit_code, bad.message, bad.log_tail]}}
    try:
        KilnClient(bad.url, "", timeout=2).health()
    except KilnError as ex:
        facts["raw_error"] = str(ex)
        facts["hint_bad"] = localserver.connection_hint(str(ex))
    # A running one killed from outside (the OOM killer, kill -9).
    p.local_data_dir, p.local_extra_args = {str(tmp_path / "good")!r}, ""
    localserver.start()
    good = localserver.wait_ready(60)
    os.killpg(good.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while localserver.status().state == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    dead = localserver.status()
    facts["dead"] = [good.state, dead.state, dead.exit_code, dead.message]
    facts["settings_url"] = preferences.client_settings().server_url
    facts["hint_dead"] = localserver.connection_hint(f"cannot reach the Kiln server at {{good.url}} (Connection refused)")
    facts["hint_other"] = localserver.connection_hint("Kiln server said 422 to POST /v1/jobs: bad seed")
    # Stopped (not died), with Use Local Server on: it says so and how to start it.
    localserver.stop()
    facts["hint_stopped"] = localserver.connection_hint("cannot reach the Kiln server (Connection refused)")
    return facts
"""
    )
    d = run_bpy(body, tmp_path, timeout=120, env=ENV).data
    state, code, message, tail = d["bad"]
    assert (state, code) == ("died", 2)
    assert any("--max-queued" in line and "invalid int value" in line for line in tail), tail
    assert "exit code 2" in message and "invalid int value" in message
    # The client's own text says "Connection refused"; the hint says what happened instead.
    assert "refused" in d["raw_error"].lower()
    assert "refused" not in d["hint_bad"].lower()
    assert "stopped on its own (exit code 2)" in d["hint_bad"] and "invalid int value" in d["hint_bad"]
    assert "Start Local Server" in d["hint_bad"]
    assert d["dead"][:3] == ["running", "died", -9] and "exit code -9" in d["dead"][3]
    assert "exit code -9" in d["hint_dead"] and "refused" not in d["hint_dead"].lower()
    assert d["settings_url"] == "http://127.0.0.1:8765"  # a dead server's URL is not used
    assert d["hint_other"] == "Kiln server said 422 to POST /v1/jobs: bad seed"
    assert "not running" in d["hint_stopped"] and "Start Local Server" in d["hint_stopped"]
    assert "refused" not in d["hint_stopped"].lower()


BATCH = """
import os, json, urllib.request
from blender_addon import cli, localserver, runtime

seen = []
_wait = localserver.LocalServer.wait_ready

def wait_and_record(self, timeout=120.0):
    st = _wait(self, timeout)
    req = urllib.request.Request(self.url + "/v1/info", headers={{"Authorization": f"Bearer {{self.token}}"}})
    with urllib.request.urlopen(req, timeout=5) as r:
        workers = [w["pid"] for w in json.loads(r.read()).get("workers", [])]
    seen.append({{"pid": self.pid, "workers": workers, "data": str(self.data_dir), "url": self.url}})
    return st

localserver.LocalServer.wait_ready = wait_and_record

def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{{pid}}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"

def main():
    argv = ["generate", "--prompt", "a small red box", "--kind", "kiln_test_box", "--seed", "5",
            "--out", {out!r}, "--start-server", "--resolution", "64", "--texture-size", "256",
            "--poll-interval", "0.1"]
    facts = {{"interrupt": {interrupt!r}}}
    if {interrupt!r}:
        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt
        runtime.run_many = interrupted
        try:
            cli.main(argv)
            facts["code"] = "returned"
        except KeyboardInterrupt:
            facts["code"] = "KeyboardInterrupt"
    else:
        facts["code"] = cli.main(argv)
    facts["seen"] = seen
    facts["alive"] = [[alive(s["pid"]), *[alive(w) for w in s["workers"]]] for s in seen]
    facts["data_left"] = [os.path.exists(s["data"]) for s in seen]
    facts["files"] = sorted(os.listdir({out!r})) if os.path.isdir({out!r}) else []
    return facts
"""


def _batch(tmp_path: Path, interrupt: bool):
    out = tmp_path / "out"
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**ENV, "TMPDIR": str(temp)}
    t = time.monotonic()
    run = run_bpy(BATCH.format(out=str(out), interrupt=interrupt), tmp_path, timeout=120, env=env)
    return run, time.monotonic() - t, temp


def test_start_server_runs_a_batch_and_leaves_no_server(tmp_path):
    run, seconds, temp = _batch(tmp_path, interrupt=False)
    d = run.data
    assert d["code"] == 0, run.stderr[-3000:]
    assert d["files"] == ["a_small_red_box.glb", "kiln.blend"]
    [seen] = d["seen"]  # one server, in a temporary folder, on loopback
    assert seen["data"].startswith(str(temp)) and seen["url"].startswith("http://127.0.0.1:")
    assert seen["workers"], "the server reported no worker processes"
    assert d["alive"] == [[False] * (1 + len(seen["workers"]))]
    assert d["data_left"] == [False] and not list(temp.glob("kiln-server-*"))
    assert "kiln: local server running at http://127.0.0.1:" in run.stdout
    assert seconds < 60


def test_start_server_stops_it_on_keyboard_interrupt(tmp_path):
    run, _, temp = _batch(tmp_path, interrupt=True)
    d = run.data
    assert d["code"] == "KeyboardInterrupt"
    [seen] = d["seen"]
    assert d["alive"] == [[False] * (1 + len(seen["workers"]))]
    assert d["data_left"] == [False] and not list(temp.glob("kiln-server-*"))
