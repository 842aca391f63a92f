"""Wire types of docs/API.md: parsing, defaults, validation, error texts."""

from __future__ import annotations

import pytest

from blender_addon.protocol import (
    AttributeReport,
    Job,
    JobRequest,
    OutputOptions,
    ServerInfo,
    error_detail_text,
)


def test_job_parses_the_documented_object():
    job = Job.from_dict(
        {
            "id": "3f2a",
            "kind": "avatar",
            "state": "running",
            "stage": "sample",
            "progress": 0.42,
            "eta_seconds": 12.5,
            "message": "DDIM step 21/50",
            "error": None,
            "params": {"seed": 11},
            "artifacts": [{"name": "asset.glb", "content_type": "model/gltf-binary", "size": 9, "url": "/u"}],
        }
    )
    assert (job.state, job.stage, job.progress, job.eta_seconds, job.seed) == (
        "running",
        "sample",
        0.42,
        12.5,
        11,
    )
    assert not job.is_terminal
    assert job.artifact("asset.glb").size == 9 and job.artifact("turntable.mp4") is None


def test_job_progress_is_clamped_and_nulls_are_tolerated():
    job = Job.from_dict({"id": "x", "kind": "avatar", "state": "succeeded", "progress": 1.7, "stage": None})
    assert job.progress == 1.0 and job.stage == "" and job.is_terminal and job.seed is None


def test_job_without_id_says_what_is_wrong():
    with pytest.raises(ValueError, match="without 'id'; is the URL a Kiln server"):
        Job.from_dict({"kind": "avatar", "state": "queued"})


def test_output_ranges_name_the_field():
    with pytest.raises(ValueError, match="mesh resolution is 600; use a value from 64 to 512"):
        OutputOptions(resolution=600).validate()
    with pytest.raises(ValueError, match="texture size is 10; use a value from 64 to 4096"):
        OutputOptions(texture_size=10).validate()
    OutputOptions(64, 256, 0, 64).validate()
    OutputOptions(512, 4096, 360, 1024).validate()


def test_photo_requests_need_no_prompt_but_others_do():
    JobRequest("photo_avatar").validate()
    with pytest.raises(ValueError, match="prompt is empty"):
        JobRequest("text_to_3d", " ").validate()


def test_seed_is_sent_only_when_fixed():
    assert "seed" not in JobRequest("avatar", "x").to_dict()
    assert JobRequest("avatar", "x", seed=0).to_dict()["seed"] == 0


def test_info_defaults():
    info = ServerInfo.from_dict({"version": "0.1.0", "device": "cuda"})
    assert (
        info.presets == ("draft", "standard", "high", "cpu") and info.kinds == () and info.queue_length == 0
    )


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (
            b'{"detail": "Unknown job; list jobs with GET /v1/jobs."}',
            "Unknown job; list jobs with GET /v1/jobs.",
        ),
        ({"detail": [{"loc": ["body", "seed"], "msg": "too big"}]}, "seed: too big"),
        ({"detail": [{"loc": [], "msg": "bad"}, "odd"]}, "bad; odd"),
        (b"plain text\n", "plain text"),
        (None, ""),
    ],
)
def test_error_detail_text(body, text):
    assert error_detail_text(body) == text


# attributes.json as the avatar job writes it (core/pipelines/avatar.py, run_avatar_job step 3).
AVATAR_RECORD = {
    "prompt": "a woman with a red bob, blue hair and a flurble",
    "attributes": {"hair_style": "bob", "hair_color": "blue", "glasses": "round"},
    "sources": {"hair_style": "prompt", "hair_color": "prompt", "glasses": "request"},
    "unspecified": ["head_shape", "jaw"],
    "unknown_words": ["flurble"],
    "conflicts": ["hair_color: 'red' and 'blue' both mentioned; using 'blue'"],
    "notes": [],
    "seed": 1234,
    "guidance_scale": None,
    "stats": {"vertices": 100},
}


def test_attribute_report_of_an_avatar_job():
    report = AttributeReport.from_dict(AVATAR_RECORD)
    assert [(a.name, a.value, a.source, a.confidence) for a in report.attributes] == [
        ("hair_style", "bob", "prompt", None),
        ("hair_color", "blue", "prompt", None),
        ("glasses", "round", "request", None),
    ]
    assert report.unknown_words == ("flurble",)
    assert report.conflicts == ("hair_color: 'red' and 'blue' both mentioned; using 'blue'",)
    assert report.seed == 1234 and report.unsure == () and report.warnings == ()
    assert report.notes == (
        "not understood: flurble",
        "conflict: hair_color: 'red' and 'blue' both mentioned; using 'blue'",
    )


def test_attribute_report_of_the_real_photo_job_record(tmp_path):
    # The record core writes for a photo avatar (resolve + AvatarRecord, as generate_avatar_job
    # does), read back by the add-on: the merging and the file are real, the reading is a stand-in.
    import numpy as np

    from core.avatar.reading import PhotoReading, Reading
    from core.avatar.record import AvatarRecord
    from core.avatar.vocab.resolve import resolve

    reading = PhotoReading(
        readings={
            "skin_tone": Reading("tan", 0.91, "cheek L*=52"),
            "hair_color": Reading("brown", 0.8, "hair L*=30"),
            "glasses": Reading("round", 0.3, "frame score 0.2"),
        },
        face_box=(1.0, 2.0, 30.0, 40.0),
        landmarks=np.zeros((478, 2)),
        warnings=("the face is small in the photo",),
    )
    resolved = resolve("with a red cap and a zorble", {"beard": "stubble"}, reading)
    path = AvatarRecord.build(
        "with a red cap and a zorble", resolved, {}, 77, None, None, photo=reading.to_json()
    ).write(tmp_path)
    report = AttributeReport.from_json(path.read_bytes())
    used = {a.name: (a.value, a.source, a.confidence) for a in report.attributes}
    assert used["skin_tone"] == ("tan", "photo", 0.91)
    assert used["hair_color"] == ("brown", "photo", 0.8)
    assert used["headwear"] == ("cap", "prompt", None) and used["headwear_color"] == ("red", "prompt", None)
    assert used["beard"] == ("stubble", "request", None)
    assert "glasses" not in used  # read, but too unsure: the model chose
    assert [(a.name, a.value, a.confidence) for a in report.unsure] == [("glasses", "round", 0.3)]
    assert report.unknown_words == ("zorble",)
    assert report.warnings == ("the face is small in the photo",) and report.seed == 77


@pytest.mark.parametrize("text", [b"", b"not json", b"[1, 2]", b'{"attributes": [1], "sources": 3}'])
def test_a_broken_attributes_file_is_an_empty_report(text):
    report = AttributeReport.from_json(text)
    assert report.attributes == () and report.notes == () and report.seed is None


def test_attribute_report_lists_what_the_seed_drew_after_what_was_asked():
    record = {**AVATAR_RECORD, "drawn": {"hair_style": "long", "clothing": "hoodie", "age": "young"}}
    report = AttributeReport.from_dict(record)
    rows = [(a.name, a.value, a.source) for a in report.attributes]
    assert rows[:3] == [
        ("hair_style", "bob", "prompt"),
        ("hair_color", "blue", "prompt"),
        ("glasses", "round", "request"),
    ]
    # A drawn value never overrides an asked one.
    assert rows[3:] == [("clothing", "hoodie", "seed"), ("age", "young", "seed")]


def test_variation_is_sent_only_when_set_and_checked():
    assert "variation" not in JobRequest("avatar", "a person").to_dict()  # old servers accept it
    assert JobRequest("avatar", "a person", variation=0.25).to_dict()["variation"] == 0.25
    with pytest.raises(ValueError, match="variation"):
        JobRequest("avatar", "a person", variation=2.0).validate()


def test_rig_off_is_sent_for_avatar_kinds_only():
    assert "rig" not in JobRequest("avatar", "a person").to_dict()  # the server's default rigs
    assert JobRequest("avatar", "a person", rig=False).to_dict()["rig"] is False
    assert "rig" not in JobRequest("text_to_3d", "a cup", rig=False).to_dict()
    with pytest.raises(ValueError, match="rig"):
        JobRequest("avatar", "a person", rig="no").validate()
