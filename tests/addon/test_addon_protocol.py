"""Wire types of docs/API.md: parsing, defaults, validation, error texts."""

from __future__ import annotations

import pytest

from blender_addon.protocol import Job, JobRequest, OutputOptions, ServerInfo, error_detail_text


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
    with pytest.raises(ValueError, match="texture size is 100; use a value from 256 to 4096"):
        OutputOptions(texture_size=100).validate()
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
    assert info.presets == ("draft", "standard", "high") and info.kinds == () and info.queue_length == 0


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
