"""In-process units of the server: job store transitions, config checks, photo checks, artifact rules."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from server.config import ServerConfig, default_data_dir, is_loopback, parse_engine_specs
from server.store import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, Artifact, JobStore
from server.supervisor import collect_artifacts, crash_reason
from server.uploads import UploadError, check_photo


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "jobs.sqlite3")


def test_store_is_wal_and_fifo(store: JobStore) -> None:
    assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    a, b = store.create("k", {"n": 1}), store.create("k", {"n": 2})
    assert (a.state, a.version, a.attempts) == (QUEUED, 1, 0)
    first = store.claim_next()
    assert first is not None and first.id == a.id and first.state == RUNNING and first.attempts == 1
    assert first.version == 2 and first.started_at is not None
    # A job this store claimed is never handed out again; the next queued one is.
    assert store.claim_next().id == b.id
    assert store.claim_next() is None
    assert store.count(QUEUED) == 0 and store.count(RUNNING) == 2


def test_store_progress_and_finish_only_while_active(store: JobStore) -> None:
    job = store.create("k", {})
    assert not store.update_progress(job.id, "s", 0.5, "m", None)  # queued: no progress
    store.claim_next()
    assert store.update_progress(job.id, "bake", 0.5, "half", 3.0)
    got = store.get(job.id)
    assert (got.stage, got.progress, got.message, got.eta_seconds, got.version) == (
        "bake",
        0.5,
        "half",
        3.0,
        3,
    )
    art = Artifact("asset.glb", "out/asset.glb", 10)
    assert store.finish(job.id, SUCCEEDED, "done", artifacts=[art])
    done = store.get(job.id)
    assert done.state == SUCCEEDED and done.progress == 1.0 and done.artifacts == (art,)
    # A finished job never changes again.
    assert not store.finish(job.id, FAILED, error="late")
    assert not store.update_progress(job.id, "x", 0.1, "", None)
    assert store.get(job.id).state == SUCCEEDED


def test_store_cancel_queued_running_finished(store: JobStore) -> None:
    running, queued = store.create("k", {}), store.create("k", {})
    store.claim_next()
    assert store.request_cancel(queued.id).state == CANCELLED
    flagged = store.request_cancel(running.id)
    assert flagged.state == RUNNING and flagged.cancel_requested and flagged.message == "cancelling"
    v = flagged.version
    assert store.request_cancel(running.id).version == v  # asking twice changes nothing
    assert store.claim_next() is None  # a cancel-flagged running job is not resumed
    assert not store.delete(running.id)  # active jobs are not deleted
    assert store.delete(queued.id) and store.get(queued.id) is None


def test_store_recover_after_crash(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    resume, cancel, doomed = (store.create("k", {}) for _ in range(3))
    for _ in range(3):
        store.claim_next()
    store.request_cancel(cancel.id)
    # The third job was interrupted twice before without getting further: this is the third.
    store._conn().execute("UPDATE jobs SET stalls = 2 WHERE id = ?", (doomed.id,))
    store.close()
    # A new process opens the same file, as after kill -9.
    again = JobStore(path)
    outcomes = {job.id: what for job, what in again.recover(max_attempts=3)}
    assert outcomes == {resume.id: "resume", cancel.id: "cancelled", doomed.id: "failed"}
    assert again.get(resume.id).state == RUNNING and "resuming" in again.get(resume.id).message
    assert again.get(cancel.id).state == CANCELLED
    assert "interrupted 3 times without making progress" in again.get(doomed.id).error
    nxt = again.claim_next()
    assert nxt.id == resume.id and nxt.attempts == 2  # running jobs first, attempt counted
    again.release(resume.id)
    assert again.get(resume.id).attempts == 1


def test_store_counts_only_interruptions_without_progress(tmp_path: Path) -> None:
    # Server kills are not the job's fault: one that got further before each kill keeps resuming;
    # only kills in a row with no progress in between make it poison.
    path = tmp_path / "jobs.sqlite3"
    job = JobStore(path).create("k", {})
    progress = 0.0
    for _ in range(5):  # five kills, each after some progress
        store = JobStore(path)
        store.recover(max_attempts=3)
        assert store.claim_next().id == job.id
        progress += 0.1
        assert store.update_progress(job.id, "s", progress, "m", None)
        store.close()
    store = JobStore(path)
    assert {j.id: what for j, what in store.recover(3)} == {job.id: "resume"}
    store.close()
    # Now three starts in a row that report nothing new (a resume re-reporting its old progress).
    for expected in ("resume", "resume", "failed"):
        store = JobStore(path)
        if expected == "failed":
            assert {j.id: what for j, what in store.recover(3)} == {job.id: "failed"}
            break
        claimed = store.claim_next()
        assert claimed.id == job.id
        assert store.update_progress(job.id, "resume", progress, "resumed", None)  # not further
        store.close()
        store = JobStore(path)
        assert {j.id: what for j, what in store.recover(3)} == {job.id: expected}
        store.close()
    assert "interrupted 3 times without making progress" in store.get(job.id).error
    # A clean stop (release) is never an interruption.
    clean = store.create("k", {})
    for _ in range(4):
        assert store.claim_next().id == clean.id
        store.release(clean.id)
        assert {j.id: what for j, what in store.recover(3)}[clean.id] == "resume"


def test_store_transaction_survives_a_commit_that_fails(store: JobStore) -> None:
    # SQLite rolls a transaction back itself when COMMIT fails for a full disk; the store must
    # then raise the real error, not "cannot rollback - no transaction is active".
    import sqlite3

    job = store.create("k", {})
    with pytest.raises(sqlite3.OperationalError, match="disk is full"), store._transaction() as conn:
        conn.execute("UPDATE jobs SET message = 'x' WHERE id = ?", (job.id,))
        conn.execute("ROLLBACK")  # what SQLite does on SQLITE_FULL
        raise sqlite3.OperationalError("database or disk is full")
    assert not store._conn().in_transaction
    assert store.claim_next().id == job.id  # the store still works


def test_store_opens_read_only_when_it_cannot_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    path = tmp_path / "jobs.sqlite3"
    first = JobStore(path)
    done = first.create("k", {})
    first.claim_next()
    first.finish(done.id, SUCCEEDED, "done", artifacts=[Artifact("a.json", "a.json", 2)])
    first.close()

    def full(self: JobStore) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(JobStore, "open_for_writing", full)
    degraded = JobStore(path)
    assert degraded.read_only
    assert degraded.get(done.id).state == SUCCEEDED  # finished jobs still readable
    assert [j.id for j in degraded.list_jobs()] == [done.id]
    monkeypatch.undo()
    degraded.open_for_writing()  # space is back
    assert not degraded.read_only and degraded.create("k", {}).state == QUEUED


def test_disk_full_errors_are_recognised() -> None:
    import errno
    import sqlite3

    from server.disk import is_disk_full

    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    assert is_disk_full(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 768 vs 662"))
    try:
        try:
            raise OSError(errno.ENOSPC, "full")
        except OSError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert is_disk_full(outer)
    assert not is_disk_full(OSError(errno.EACCES, "denied")) and not is_disk_full(ValueError("x"))


def test_loopback_and_token_rules() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.com"))
    with pytest.raises(ValueError, match="needs a token"):
        ServerConfig(host="0.0.0.0").check()
    ServerConfig(host="0.0.0.0", token="long-enough-secret").check()
    with pytest.raises(ValueError, match="too short"):
        ServerConfig(token="abc").check()
    ServerConfig().check()  # loopback without a token is fine


def test_engine_specs_and_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert parse_engine_specs(["a=m.n:f", " b = x:y ", ""]) == {"a": "m.n:f", "b": "x:y"}
    for bad in ("nokind", "a=module", "a=:f", "a b=m:f"):
        with pytest.raises(ValueError):
            parse_engine_specs([bad])
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "kiln"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/path")  # invalid per XDG: ignored
    assert default_data_dir() == Path.home() / ".local" / "share" / "kiln"


def _png(w: int, h: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h)).save(buf, format="PNG")
    return buf.getvalue()


def test_check_photo_limits() -> None:
    info = check_photo(_png(40, 30), max_bytes=10**6, max_pixels=10**6)
    assert (info.format, info.extension, info.width, info.height) == ("PNG", "png", 40, 30)
    with pytest.raises(UploadError) as e:
        check_photo(_png(40, 30), max_bytes=10, max_pixels=10**6)
    assert e.value.status == 413
    # 1200 pixels over a 1000-pixel limit: refused from the header, with the numbers.
    with pytest.raises(UploadError) as e:
        check_photo(_png(40, 30), max_bytes=10**6, max_pixels=1000)
    assert e.value.status == 413 and "40 x 30" in e.value.detail
    for bad in (b"", b"not an image", _png(40, 30)[:50]):
        with pytest.raises(UploadError) as e:
            check_photo(bad, max_bytes=10**6, max_pixels=10**6)
        assert e.value.status == 415


def test_collect_artifacts_rules(tmp_path: Path) -> None:
    work = tmp_path / "job"
    (work / "out").mkdir(parents=True)
    (work / "out" / "asset.glb").write_bytes(b"12345")
    outside = tmp_path / "secret.txt"
    outside.write_text("x")
    arts = collect_artifacts({"asset.glb": str(work / "out" / "asset.glb")}, work)
    assert arts == [Artifact("asset.glb", "out/asset.glb", 5)]
    assert collect_artifacts({"asset.glb": "out/asset.glb"}, work) == arts  # relative to the job folder
    for bad in (
        {"../x": "out/asset.glb"},
        {".hidden": "out/asset.glb"},
        {"a/b": "out/asset.glb"},
        {"secret.txt": str(outside)},
        {"x.glb": "out/missing.glb"},
        {"up": "../secret.txt"},
    ):
        with pytest.raises(ValueError):
            collect_artifacts(bad, work)
    (work / "link.glb").symlink_to(outside)
    with pytest.raises(ValueError):
        collect_artifacts({"link.glb": "link.glb"}, work)  # a symlink out of the folder


def test_crash_reasons() -> None:
    assert "killed by SIGKILL (often the system running out of memory) during stage 'bake'" in crash_reason(
        -9, "bake"
    )
    assert "exited with code 3" in crash_reason(3, "")
    assert "killed by SIGSEGV" in crash_reason(-11, "x")


@pytest.fixture
def pillow_state():
    """create_app sets Pillow's process-wide limits; put them back for the other tests in this process."""
    import warnings

    before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        yield
    Image.MAX_IMAGE_PIXELS = before


def test_cors_only_when_asked(tmp_path: Path, pillow_state) -> None:
    # In-process app without its lifespan (no worker): only the middleware is exercised.
    from fastapi.testclient import TestClient

    from server.app import create_app

    preflight = {"origin": "http://studio.example", "access-control-request-method": "POST"}
    plain = TestClient(create_app(ServerConfig(data_dir=tmp_path / "a")), base_url="http://127.0.0.1")
    r = plain.options("/v1/jobs", headers=preflight)
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    config = ServerConfig(data_dir=tmp_path / "b", cors_origins=("http://studio.example",))
    allowed = TestClient(create_app(config), base_url="http://127.0.0.1")
    r = allowed.options("/v1/jobs", headers=preflight)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://studio.example"
    r = allowed.options("/v1/jobs", headers={**preflight, "origin": "http://evil.example"})
    assert r.status_code == 403


def test_worker_threads_setting_reaches_the_worker(server_factory) -> None:
    import time

    from server.__main__ import config_from_args
    from server.supervisor import engine_settings

    with pytest.raises(SystemExit):
        config_from_args(["--worker-threads", "0"])
    settings = engine_settings(config_from_args(["--worker-threads", "1", "--avatar-weights", "/m"]))
    assert settings.threads == 1 and settings.avatar_weights == "/m" and settings.text_model is None
    server = server_factory(["--worker-threads", "1"]).start()
    deadline = time.monotonic() + 60
    while (info := server.info())["device"] == "starting" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert info["worker_threads"] == 1


def test_variation_is_checked_by_the_schema() -> None:
    from pydantic import ValidationError

    from server.schemas import JobParams

    assert JobParams(kind="avatar", variation=0.5).variation == 0.5
    for bad in (-0.1, 1.6, float("nan")):
        with pytest.raises(ValidationError, match="variation"):
            JobParams(kind="avatar", variation=bad)
