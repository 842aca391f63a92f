"""build_asset end to end: files, stats, progress, option errors, cancellation at every stage."""

from __future__ import annotations

import json

import imageio_ffmpeg
import pytest
import trimesh

from core.assets.__main__ import main as cli_main
from core.assets.mesh import AssetError
from core.assets.pipeline import AssetOptions, build_asset
from core.fields.analytic import BoxField
from core.progress import Cancelled, ProgressEvent, Reporter

SMALL = dict(resolution=64, texture_size=128, turntable_frames=4, turntable_size=64)
ARTIFACTS = ["asset.glb", "preview.png", "turntable.mp4"]


def test_build_asset_writes_the_three_artifacts(two_tone, tmp_path) -> None:
    events: list[ProgressEvent] = []
    result = build_asset(two_tone, tmp_path, AssetOptions(**SMALL), Reporter(callback=events.append))
    assert sorted(p.name for p in tmp_path.iterdir()) == ARTIFACTS  # no staging folder left
    assert (result.glb, result.video, result.preview) == tuple(
        tmp_path / n for n in ARTIFACTS[::2] + ARTIFACTS[1:2]
    )
    # Stats describe what was written.
    (geom,) = trimesh.load(result.glb).geometry.values()
    assert result.stats["faces"] == len(geom.faces)
    assert result.stats["vertices"] == len(geom.vertices)
    assert result.stats["watertight"] is True
    assert set(result.stats["timings"]) == {"extract", "cleanup", "texture", "export", "turntable"}
    gen = imageio_ffmpeg.read_frames(str(result.video))
    assert next(gen)["size"] == (64, 64) and sum(1 for _ in gen) == 4
    # Progress: every long step reports, fractions never go back, and the run ends at 1.
    stages = {e.stage for e in events}
    assert {"extract", "cleanup", "unwrap", "bake", "export", "turntable", "publish"} <= stages
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_no_video_when_frames_is_zero(tmp_path, validate_glb) -> None:
    (tmp_path / "turntable.mp4").write_bytes(b"stale")
    options = AssetOptions(**{**SMALL, "turntable_frames": 0})
    result = build_asset(BoxField(), tmp_path, options)
    assert result.video is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["asset.glb", "preview.png"]
    assert validate_glb(result.glb).returncode == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("resolution", 32, r"AssetOptions\.resolution must be an integer in 64\.\.512"),
        ("resolution", 600, r"resolution.*64\.\.512"),
        ("texture_size", 5000, r"texture_size.*64\.\.4096"),
        ("max_faces", 10, r"max_faces.*1000"),
        ("turntable_frames", 361, r"turntable_frames.*0\.\.360"),
        ("turntable_size", 32, r"turntable_size.*64\.\.1024"),
        ("turntable_fps", 0, r"turntable_fps.*1\.\.60"),
        ("turntable_elevation", 120.0, r"turntable_elevation.*-89\.\.89"),
        ("min_component_fraction", 0.9, r"min_component_fraction.*0\.\.0\.5"),
        ("iso", float("inf"), r"iso.*finite"),
        ("vertex_colors", "yes", r"vertex_colors"),
    ],
)
def test_options_name_the_bad_field(field, value, message, tmp_path) -> None:
    with pytest.raises(AssetError, match=message):
        build_asset(BoxField(), tmp_path, AssetOptions(**{field: value}))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stage", ["extract", "cleanup", "unwrap", "bake", "export", "turntable"])
def test_cancellation_in_any_stage_leaves_no_artifact(two_tone, tmp_path, stage) -> None:
    state = {"seen": False}

    def on_event(event: ProgressEvent) -> None:
        if event.stage == stage:
            state["seen"] = True

    # The reporter checks `cancel` before emitting, so the check after the first event of
    # `stage` is the one that stops the run.
    reporter = Reporter(callback=on_event, cancel=lambda: state["seen"])
    with pytest.raises(Cancelled):
        build_asset(two_tone, tmp_path, AssetOptions(**SMALL), reporter)
    assert state["seen"]
    assert list(tmp_path.iterdir()) == []


def test_no_surface_error_reaches_the_caller(tmp_path) -> None:
    with pytest.raises(AssetError, match="no surface"):
        build_asset(BoxField(), tmp_path, AssetOptions(**{**SMALL, "iso": -10.0}))
    assert list(tmp_path.iterdir()) == []


def test_cli_builds_a_box(tmp_path, capsys) -> None:
    code = cli_main(
        [
            "--shape",
            "box",
            "--out",
            str(tmp_path),
            "--resolution",
            "64",
            "--texture-size",
            "64",
            "--frames",
            "2",
            "--size",
            "64",
            "--quiet",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["stats"]["watertight"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ARTIFACTS
    assert cli_main(["--shape", "box", "--out", str(tmp_path / "x"), "--resolution", "10", "--quiet"]) == 2
