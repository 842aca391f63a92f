"""Submit -> wait -> download, blocking and on a worker thread, against a scripted loopback server."""

from __future__ import annotations

import json
import threading
import time

import pytest

from blender_addon.client import KilnClient
from blender_addon.jobflow import JobSpec, JobThread, artifact_filename, file_stem_from_text, run_job_flow
from blender_addon.protocol import JobRequest
from tests.addon.http_fixture import Reply

JOB = "b" * 32
GLB = b"glTF" + b"\x02\x00\x00\x00" + bytes(64)


def _artifact(name: str, size: int) -> dict:
    return {"name": name, "content_type": "x", "size": size, "url": f"/v1/jobs/{JOB}/artifacts/{name}"}


def _serve_job(server, make_job, states: list[dict]) -> None:
    server.route("POST", "/v1/jobs", Reply(201, make_job(JOB, "queued")))
    server.route(
        "GET", f"/v1/jobs/{JOB}", lambda _s: Reply(json=states.pop(0) if len(states) > 1 else states[0])
    )
    server.route("GET", f"/v1/jobs/{JOB}/artifacts/asset.glb", Reply(raw=GLB))


def test_file_names():
    assert file_stem_from_text("  A woman, RED bob & glasses!  ") == "a_woman_red_bob_glasses"
    assert file_stem_from_text("!!!") == "asset"
    assert len(file_stem_from_text("x" * 100)) == 40
    assert artifact_filename("red_bob", "asset.glb") == "red_bob.glb"
    assert artifact_filename("red_bob", "turntable.mp4") == "red_bob_turntable.mp4"


def test_success_downloads_the_glb_under_the_stem(server, make_job, tmp_path):
    done = make_job(JOB, "succeeded", progress=1.0, artifacts=[_artifact("asset.glb", len(GLB))])
    _serve_job(server, make_job, [make_job(JOB, "running", stage="sample", progress=0.3), done])
    updates = []
    spec = JobSpec(request=JobRequest("avatar", "a man"), out_dir=tmp_path, file_stem="a_man")
    final = run_job_flow(KilnClient(server.url), spec, updates.append, poll_interval=0.01)
    assert final.ok and final.error == ""
    assert final.files["asset.glb"] == tmp_path / "a_man.glb"
    assert (tmp_path / "a_man.glb").read_bytes() == GLB
    # created (queued), running 0.3, succeeded (from the poll), then the final update.
    assert [(u.job.state, u.done) for u in updates] == [
        ("queued", False),
        ("running", False),
        ("succeeded", False),
        ("succeeded", True),
    ]


def test_failed_job_carries_the_servers_reason(server, make_job, tmp_path):
    failed = make_job(JOB, "failed", error="the avatar weights are missing; run make setup")
    _serve_job(server, make_job, [failed])
    final = run_job_flow(
        KilnClient(server.url), JobSpec(JobRequest("avatar", "x"), out_dir=tmp_path), lambda u: None
    )
    assert not final.ok
    assert final.error == "the job failed: the avatar weights are missing; run make setup"
    assert list(tmp_path.iterdir()) == []


def test_succeeded_without_glb_is_an_error(server, make_job, tmp_path):
    _serve_job(server, make_job, [make_job(JOB, "succeeded", artifacts=[_artifact("preview.png", 3)])])
    final = run_job_flow(
        KilnClient(server.url), JobSpec(JobRequest("avatar", "x"), out_dir=tmp_path), lambda u: None
    )
    assert "has no asset.glb" in final.error


def test_invalid_request_never_reaches_the_server(server, tmp_path):
    spec = JobSpec(JobRequest("avatar", "   "), out_dir=tmp_path)
    final = run_job_flow(KilnClient(server.url), spec, lambda u: None)
    assert final.done and "prompt is empty" in final.error
    assert server.seen == []


def test_server_down_is_a_final_update_not_an_exception(closed_port_url, tmp_path):
    final = run_job_flow(
        KilnClient(closed_port_url), JobSpec(JobRequest("avatar", "x"), out_dir=tmp_path), print
    )
    assert final.done and final.job is None and "cannot reach the Kiln server" in final.error


def test_server_killed_mid_job(server, make_job, tmp_path):
    # Two polls answer "running", then every poll finds the connection dropped.
    answers = [Reply(json=make_job(JOB, "running", progress=0.2))] * 2 + [Reply(drop=True)] * 10
    server.route("POST", "/v1/jobs", Reply(201, make_job(JOB, "queued")))
    server.route("GET", f"/v1/jobs/{JOB}", lambda _s: answers.pop(0))
    final = run_job_flow(
        KilnClient(server.url), JobSpec(JobRequest("avatar", "x"), out_dir=tmp_path), lambda u: None
    )
    assert final.done and final.job.state == "queued"  # the job as created; polling never got through again
    assert "cannot reach the Kiln server" in final.error
    assert list(tmp_path.iterdir()) == []


def test_existing_job_id_is_followed_without_creating_one(server, make_job, tmp_path):
    done = make_job(JOB, "succeeded", artifacts=[_artifact("asset.glb", len(GLB))])
    _serve_job(server, make_job, [done])
    final = run_job_flow(KilnClient(server.url), JobSpec(job_id=JOB, out_dir=tmp_path), lambda u: None)
    assert final.ok
    assert [s.method for s in server.seen] == ["GET", "GET"]  # job, artifact: no POST


def test_thread_cancel_asks_the_server_and_waits_for_its_answer(server, make_job, tmp_path):
    cancelled = threading.Event()

    def job_state(_seen):
        return Reply(json=make_job(JOB, "cancelled" if cancelled.is_set() else "running", progress=0.1))

    def cancel(_seen):
        cancelled.set()
        return Reply(202, make_job(JOB, "running", message="cancelling"))

    server.route("POST", "/v1/jobs", Reply(201, make_job(JOB, "queued")))
    server.route("GET", f"/v1/jobs/{JOB}", job_state)
    server.route("POST", f"/v1/jobs/{JOB}/cancel", cancel)
    thread = JobThread(
        KilnClient(server.url), JobSpec(JobRequest("avatar", "x"), out_dir=tmp_path), 0.02
    ).start()
    deadline = time.monotonic() + 5
    while not any(u.job is not None and u.job.state == "running" for u in thread.drain()):
        assert time.monotonic() < deadline, "the worker never saw the job running"
        time.sleep(0.01)
    thread.cancel()
    thread.join(5)
    assert not thread.alive
    final = thread.drain()[-1]
    assert final.done and final.error == "cancelled" and final.job.state == "cancelled"
    assert [s.path for s in server.seen].count(f"/v1/jobs/{JOB}/cancel") == 1


def test_thread_detach_stops_following_without_cancelling(server, make_job, tmp_path):
    server.route("GET", f"/v1/jobs/{JOB}", Reply(json=make_job(JOB, "running")))
    thread = JobThread(KilnClient(server.url), JobSpec(job_id=JOB, out_dir=tmp_path), 0.02).start()
    thread.detach()
    thread.join(5)
    assert not thread.alive
    final = thread.drain()[-1]
    assert final.done and "keeps running on the server" in final.error
    assert all(not s.path.endswith("/cancel") for s in server.seen)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "a b"}, "job kind 'a b' is not a kind name"),
        ({"preset": "ultra"}, "preset 'ultra' is unknown"),
        ({"seed": -1}, "seed is -1; use a value from 0 to 2147483647"),
    ],
)
def test_request_validation_messages(kwargs, message):
    request = JobRequest(**{"kind": "avatar", "prompt": "a man", **kwargs})
    with pytest.raises(ValueError, match=message):
        request.validate()


def test_thread_reports_a_malformed_job_instead_of_dying_silently(server, make_job, tmp_path):
    # An artifact without a name used to raise KeyError inside the worker: the thread ended
    # with no final update and the job list showed the job running forever.
    broken = make_job(JOB, "succeeded", progress=1.0, artifacts=[{"size": 3}])
    _serve_job(server, make_job, [broken])
    thread = JobThread(KilnClient(server.url), JobSpec(JobRequest("avatar", "x"), out_dir=tmp_path), 0.01)
    thread.start().join(5)
    assert not thread.alive
    final = thread.drain()[-1]
    assert final.done and not final.ok
    assert f"the server sent job {JOB} with a malformed field (KeyError" in final.error
    assert list(tmp_path.iterdir()) == []


def test_attributes_json_is_downloaded_and_read_with_the_glb(server, make_job, tmp_path):
    record = {
        "attributes": {"hair_style": "bob", "skin_tone": "tan"},
        "sources": {"hair_style": "prompt", "skin_tone": "photo"},
        "confidences": {"skin_tone": 0.9},
        "photo": {"read": {"skin_tone": {"value": "tan", "confidence": 0.9, "used": True}}},
        "unknown_words": ["flurble"],
        "conflicts": [],
        "seed": 42,
    }
    raw = json.dumps(record).encode()
    done = make_job(
        JOB,
        "succeeded",
        artifacts=[_artifact("asset.glb", len(GLB)), _artifact("attributes.json", len(raw))],
    )
    _serve_job(server, make_job, [done])
    server.route("GET", f"/v1/jobs/{JOB}/artifacts/attributes.json", Reply(raw=raw))
    spec = JobSpec(JobRequest("avatar", "a bob"), out_dir=tmp_path, file_stem="a_bob")
    final = run_job_flow(KilnClient(server.url), spec, lambda u: None, poll_interval=0.01)
    assert final.ok
    assert final.files["attributes.json"] == tmp_path / "a_bob_attributes.json"
    assert json.loads((tmp_path / "a_bob_attributes.json").read_bytes()) == record
    report = final.report
    assert [(a.name, a.value, a.source, a.confidence) for a in report.attributes] == [
        ("hair_style", "bob", "prompt", None),
        ("skin_tone", "tan", "photo", 0.9),
    ]
    assert report.unknown_words == ("flurble",) and report.seed == 42


def test_a_job_without_attributes_json_has_no_report(server, make_job, tmp_path):
    _serve_job(server, make_job, [make_job(JOB, "succeeded", artifacts=[_artifact("asset.glb", len(GLB))])])
    final = run_job_flow(
        KilnClient(server.url), JobSpec(JobRequest("text_to_3d", "a pot"), out_dir=tmp_path), lambda u: None
    )
    assert final.ok and final.report is None and list(final.files) == ["asset.glb"]
    assert [s.path.rsplit("/", 1)[-1] for s in server.seen].count("attributes.json") == 0


def test_a_frozen_server_shows_not_answering_after_the_first_timeout(server, make_job, tmp_path):
    running = make_job(JOB, "running", stage="sample", progress=0.3, message="step 3/8")
    done = make_job(JOB, "succeeded", progress=1.0, artifacts=[_artifact("asset.glb", len(GLB))])
    replies = [Reply(json=running), Reply(json=running, delay=1.0), Reply(json=running), Reply(json=done)]
    server.route("POST", "/v1/jobs", Reply(201, make_job(JOB, "queued")))
    server.route("GET", f"/v1/jobs/{JOB}", lambda _s: replies.pop(0) if len(replies) > 1 else replies[0])
    server.route("GET", f"/v1/jobs/{JOB}/artifacts/asset.glb", Reply(raw=GLB))
    updates = []
    t0 = time.monotonic()
    stamps = []

    def record(update):
        updates.append(update)
        stamps.append(time.monotonic() - t0)

    spec = JobSpec(request=JobRequest("avatar", "a man"), out_dir=tmp_path)
    final = run_job_flow(KilnClient(server.url, timeout=0.3), spec, record, poll_interval=0.01)
    assert final.ok, final.error
    messages = [u.job.message for u in updates]
    trouble = next(i for i, m in enumerate(messages) if "not answering" in m)
    assert messages[trouble].endswith("is not answering, retrying (1 of 3)"), messages
    assert updates[trouble].job.state == "running" and updates[trouble].job.progress == 0.3
    assert stamps[trouble] < 1.0  # after the first timeout (0.3 s), not after three
    assert messages[trouble + 1] == "step 3/8"  # the next answer replaces the notice
