"""The add-on's HTTP client against a real loopback HTTP server: headers, errors, timeouts, downloads."""

from __future__ import annotations

import email.parser
import email.policy
import json
import os
import sys
import time

import pytest

from blender_addon.client import (
    HTTPStatusError,
    KilnClient,
    KilnError,
    OnlineAccessDisabled,
    ServerTimeout,
    ServerUnavailable,
    check_online_access,
    form_data_filename,
    is_loopback_url,
    normalize_url,
)
from blender_addon.protocol import JobRequest, OutputOptions
from tests.addon.http_fixture import Reply


def test_client_modules_do_not_import_bpy():
    # The package __init__ defers its bpy imports to register(), so these load in any Python.
    assert "bpy" not in sys.modules


def test_info_parses_and_token_header_is_sent(server):
    server.route(
        "GET",
        "/v1/info",
        Reply(
            json={"version": "0.1.0", "device": "cpu", "kinds": ["avatar"], "attributes": {"hair": ["bob"]}}
        ),
    )
    info = KilnClient(server.url, token="s3cret").info()
    assert (info.version, info.device, info.kinds, info.attributes) == (
        "0.1.0",
        "cpu",
        ("avatar",),
        {"hair": ("bob",)},
    )
    assert server.seen[-1].headers["authorization"] == "Bearer s3cret"


def test_no_token_means_no_authorization_header(server):
    server.route("GET", "/v1/health", Reply(json={"status": "ok"}))
    assert KilnClient(server.url + "/").health() is True
    assert "authorization" not in server.seen[-1].headers


def test_401_says_to_set_the_token(server):
    server.route("GET", "/v1/info", Reply(401, {"detail": "Missing or wrong token."}))
    with pytest.raises(HTTPStatusError) as err:
        KilnClient(server.url).info()
    assert err.value.status == 401
    assert "Missing or wrong token." in str(err.value) and "token" in str(err.value).split("(")[-1]


def test_422_lists_each_field_and_message(server):
    detail = [
        {
            "loc": ["body", "output", "resolution"],
            "msg": "Input should be less than or equal to 512",
            "type": "x",
        },
        {"loc": ["body", "preset"], "msg": "Input should be 'draft', 'standard' or 'high'", "type": "y"},
    ]
    server.route("POST", "/v1/jobs", Reply(422, {"detail": detail}))
    request = JobRequest("avatar", "a man")
    with pytest.raises(HTTPStatusError) as err:
        KilnClient(server.url).create_job(request)
    assert err.value.detail == (
        "output.resolution: Input should be less than or equal to 512; "
        "preset: Input should be 'draft', 'standard' or 'high'"
    )


def test_500_with_a_non_json_body_keeps_the_text(server):
    server.route("GET", "/v1/jobs/x", Reply(500, raw=b"Internal Server Error"))
    with pytest.raises(HTTPStatusError) as err:
        KilnClient(server.url).get_job("x")
    assert err.value.status == 500
    assert "Internal Server Error" in str(err.value) and "log" in str(err.value)


def test_a_slow_server_times_out_quickly(server):
    server.route("GET", "/v1/info", Reply(json={}, delay=1.5))
    client = KilnClient(server.url, timeout=0.2)
    start = time.monotonic()
    with pytest.raises(ServerTimeout) as err:
        client.info()
    elapsed = time.monotonic() - start
    # The socket timeout is 0.2 s; well under the 1.5 s the server sleeps.
    assert elapsed < 1.0
    assert "did not answer within 0.2 s" in str(err.value)


def test_server_down_is_a_clear_error(closed_port_url):
    start = time.monotonic()
    with pytest.raises(ServerUnavailable) as err:
        KilnClient(closed_port_url, timeout=5).health()
    # Connection refused on loopback is immediate, not a timeout.
    assert time.monotonic() - start < 1.0
    assert closed_port_url in str(err.value) and "python -m server" in str(err.value)


def test_dropped_connection_is_server_unavailable(server):
    server.route("GET", "/v1/info", Reply(drop=True))
    with pytest.raises(ServerUnavailable):
        KilnClient(server.url).info()


def test_non_json_answer_says_it_is_not_a_kiln_server(server):
    server.route("GET", "/v1/info", Reply(raw=b"<html>router login</html>"))
    with pytest.raises(KilnError, match=r"is .* a Kiln server"):
        KilnClient(server.url).info()


def test_create_job_sends_the_documented_body(server, make_job):
    server.route("POST", "/v1/jobs", Reply(201, make_job(state="queued")))
    request = JobRequest(
        "avatar",
        "a woman with a red bob",
        seed=None,
        attributes={"hair_style": "bob"},
        output=OutputOptions(64, 256),
    )
    job = KilnClient(server.url).create_job(request)
    assert job.state == "queued" and job.seed == 7
    body = json.loads(server.seen[-1].body)
    assert server.seen[-1].headers["content-type"] == "application/json"
    # seed omitted when None (the server picks one and echoes it back in params); an avatar
    # reads no preset or negative prompt, so neither is sent.
    assert body == {
        "kind": "avatar",
        "prompt": "a woman with a red bob",
        "attributes": {"hair_style": "bob"},
        "guidance_scale": None,
        "output": {"resolution": 64, "texture_size": 256, "turntable_frames": 36, "turntable_size": 256},
    }


def test_photo_job_is_multipart_with_photo_and_params(server, make_job, tmp_path):
    photo = tmp_path / "face.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    server.route("POST", "/v1/jobs/photo", Reply(201, make_job(kind="photo_avatar")))
    request = JobRequest("photo_avatar", seed=3, preset="standard")
    job = KilnClient(server.url).create_photo_job(photo, request)
    assert job.kind == "photo_avatar"
    seen = server.seen[-1]
    message = email.parser.BytesParser().parsebytes(
        b"Content-Type: " + seen.headers["content-type"].encode() + b"\r\n\r\n" + seen.body
    )
    parts = {p.get_param("name", header="content-disposition"): p for p in message.get_payload()}
    assert parts["photo"].get_payload(decode=True) == photo.read_bytes()
    assert parts["photo"].get_content_type() == "image/png"
    assert parts["photo"].get_filename() == "face.png"
    params = json.loads(parts["params"].get_payload(decode=True))
    # photo_avatar reads no preset, so it is not sent (a server refuses one it would ignore).
    assert "kind" not in params and params["seed"] == 3 and "preset" not in params


@pytest.mark.parametrize(
    ("name", "sent"),
    [
        ('my "best" face.png', "my %22best%22 face.png"),
        ("two\nlines\r.png", "two%0Alines%0D.png"),
        ("Zoë Ångström 写真.png", "Zoë Ångström 写真.png"),
        ("100% real; name=x.png", "100% real; name=x.png"),
    ],
)
def test_photo_file_name_is_encoded_per_rfc_7578(server, make_job, tmp_path, name, sent):
    # A quote used to end the filename parameter early, and a line break split the part's
    # headers: the server read a wrong name or none, or refused the upload.
    photo = tmp_path / name
    photo.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    server.route("POST", "/v1/jobs/photo", Reply(201, make_job(kind="photo_avatar")))
    KilnClient(server.url).create_photo_job(photo, JobRequest("photo_avatar"))
    seen = server.seen[-1]
    # The header line, byte for byte: UTF-8, nothing else escaped.
    expected = f'Content-Disposition: form-data; name="photo"; filename="{sent}"\r\n'.encode()
    assert expected in seen.body
    # And parsed back as a multipart body: two parts, the photo's bytes and name intact.
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + seen.headers["content-type"].encode() + b"\r\n\r\n" + seen.body
    )
    parts = list(message.iter_parts())
    assert [p.get_param("name", header="content-disposition") for p in parts] == ["params", "photo"]
    assert parts[1].get_filename() == sent
    assert parts[1].get_content() == photo.read_bytes()
    assert parts[1].get_content_type() == "image/png"


def test_file_name_bytes_that_are_not_utf8_are_replaced():
    assert form_data_filename(os.fsdecode(b"caf\xe9.jpg")) == "caf\ufffd.jpg"
    assert form_data_filename('a"\r\n.jpg') == "a%22%0D%0A.jpg"


def test_missing_photo_is_refused_before_any_request(server, tmp_path):
    with pytest.raises(KilnError, match="does not exist"):
        KilnClient(server.url).create_photo_job(tmp_path / "nope.jpg", JobRequest("photo_avatar"))
    assert server.seen == []


def test_download_writes_the_file_whole(server, tmp_path):
    payload = b"glTF" + bytes(range(256)) * 5000  # 1.28 MB: more than one 1 MiB chunk
    server.route("GET", "/v1/jobs/j1/artifacts/asset.glb", Reply(raw=payload))
    dest = KilnClient(server.url).download_artifact("j1", "asset.glb", tmp_path / "sub" / "a.glb")
    assert dest.read_bytes() == payload
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.glb"]


def test_cut_download_leaves_no_file(server, tmp_path):
    server.route("GET", "/v1/jobs/j1/artifacts/asset.glb", Reply(raw=b"glTF" * 100, short_by=1000))
    with pytest.raises(ServerUnavailable):
        KilnClient(server.url, timeout=2).download_artifact("j1", "asset.glb", tmp_path / "a.glb")
    assert list(tmp_path.iterdir()) == []


def test_wait_reports_each_change_and_returns_the_final_job(server, make_job):
    states = iter(
        [
            make_job(state="queued"),
            make_job(state="running", stage="sample", progress=0.5),
            make_job(state="running", stage="sample", progress=0.5),  # unchanged: no update
            make_job(state="succeeded", progress=1.0),
        ]
    )
    server.route("GET", "/v1/jobs/" + "a" * 32, lambda _s: Reply(json=next(states)))
    updates = []
    job = KilnClient(server.url).wait_for_job("a" * 32, poll_interval=0.01, on_update=updates.append)
    assert job.state == "succeeded"
    assert [(u.state, u.progress) for u in updates] == [("queued", 0.0), ("running", 0.5), ("succeeded", 1.0)]


def test_wait_survives_two_failed_polls_but_not_three(server, make_job):
    answers = [Reply(drop=True), Reply(drop=True), Reply(json=make_job(state="succeeded"))]
    server.route("GET", "/v1/jobs/j", lambda _s: answers.pop(0))
    assert KilnClient(server.url).wait_for_job("j", poll_interval=0.01).state == "succeeded"

    answers[:] = [Reply(drop=True)] * 3
    with pytest.raises(ServerUnavailable):
        KilnClient(server.url).wait_for_job("j", poll_interval=0.01)


def test_loopback_detection_and_online_access():
    assert is_loopback_url("http://127.0.0.1:8765")
    assert is_loopback_url("http://127.4.5.6")
    assert is_loopback_url("http://localhost:1")
    assert is_loopback_url("http://[::1]:8765")
    assert not is_loopback_url("http://192.168.1.20:8765")
    assert not is_loopback_url("https://kiln.example.org")
    check_online_access("http://127.0.0.1:8765", online_access=False)  # loopback works offline
    check_online_access("https://kiln.example.org", online_access=True)
    with pytest.raises(OnlineAccessDisabled, match="Allow Online Access"):
        check_online_access("https://kiln.example.org", online_access=False)


def test_url_normalisation():
    assert normalize_url(" 127.0.0.1:8765/ ") == "http://127.0.0.1:8765"
    with pytest.raises(KilnError, match="empty"):
        normalize_url("  ")
    with pytest.raises(KilnError, match="http"):
        normalize_url("ftp://host")


def test_oversized_photo_is_refused_before_upload(server, tmp_path):
    photo = tmp_path / "huge.jpg"
    with open(photo, "wb") as fh:
        fh.truncate(21 * 2**20)  # sparse: 21 MB on paper, nothing on disk
    with pytest.raises(KilnError, match=r"huge.jpg is 21.0 MB; the server accepts up to 20 MB"):
        KilnClient(server.url).create_photo_job(photo, JobRequest("photo_avatar"))
    assert server.seen == []


@pytest.mark.parametrize("body", [[], "ok", {"queue_length": "many"}])
def test_info_from_something_that_is_not_a_kiln_server_is_a_kiln_error(server, body):
    # Another program on the port answering JSON of its own: Check Connection must get a
    # KilnError it can show (anything else ended its worker thread and left "Checking..." up).
    server.route("GET", "/v1/info", Reply(json=body))
    with pytest.raises(KilnError, match=r"/v1/info did not answer like a Kiln server"):
        KilnClient(server.url).info()
