"""The text-to-3D loop end to end on a tiny random SD pipeline: gradients, checkpoints, resume, errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from core.fields.hashgrid import HashGridConfig
from core.fields.nerf import NeRFFieldConfig
from core.guidance.base import GuidanceError
from core.pipelines.text_to_3d import (
    TextTo3DConfig,
    TextTo3DError,
    TextTo3DRequest,
    TrainConfig,
    main,
    preset_config,
    text_to_3d,
)
from core.progress import Cancelled, Reporter
from core.render.occupancy import OccupancyConfig
from core.render.volume import RendererConfig


def _small_config(steps: int = 6) -> TextTo3DConfig:
    """A few-second configuration: 16x16 renders, a small grid, checkpoints every 2 steps."""
    return TextTo3DConfig(
        field=NeRFFieldConfig(encoding=HashGridConfig(levels=3, log2_table_size=12, max_resolution=24)),
        renderer=RendererConfig(samples_per_ray=24),
        occupancy=OccupancyConfig(resolution=8, update_every=2, warmup_steps=2),
        train=TrainConfig(
            steps=steps, height=16, width=16, checkpoint_every=2, preview_every=3, preview_size=16
        ),
        shading=dataclasses.replace(TextTo3DConfig().shading, warmup_steps=2),
    )


def _request(tiny_sd: Path, work_dir: Path | None, **kw) -> TextTo3DRequest:
    return TextTo3DRequest(prompt="a red chair", model=str(tiny_sd), work_dir=work_dir, seed=7, **kw)


def test_tiny_pipeline_runs_and_moves_the_field(tiny_sd, tmp_path):
    events = []
    config = _small_config(steps=4)
    result = text_to_3d(_request(tiny_sd, tmp_path), Reporter(events.append), config=config)
    assert result.steps == 4 and result.resumed_from == 0
    assert np.isfinite(result.loss)
    # Gradients reached the field: the MLP moved away from its seeded init.
    torch.manual_seed(7)
    from core.fields.nerf import NeRFField

    init = NeRFField(config.field)
    moved = [not torch.equal(a, b) for a, b in zip(init.parameters(), result.nerf.parameters(), strict=True)]
    assert all(moved)
    train = [e for e in events if e.stage == "train"]
    assert [round(e.fraction, 2) for e in train] == [0.25, 0.5, 0.75, 1.0]
    assert "loss" in train[-1].message
    assert result.preview is not None and result.preview.is_file()
    assert any(e.preview == result.preview for e in train)
    # The asset field answers the Field contract: (N, 3) -> (N,) density, (N, 3) albedo.
    pts = np.zeros((5, 3), dtype=np.float32)
    assert result.field.kind == "density"
    assert result.field.value(pts).shape == (5,) and result.field.value(pts).dtype == np.float32
    assert result.field.albedo(pts).shape == (5, 3)
    assert result.field.value(np.zeros((0, 3), dtype=np.float32)).shape == (0,)
    # The density blob makes the centre solid at the start and it is still there.
    assert result.field.inside(result.field.value(pts)).all()


def test_checkpoint_resume_equals_uninterrupted_run(tiny_sd, tmp_path):
    config = _small_config(steps=6)
    whole = text_to_3d(_request(tiny_sd, tmp_path / "whole"), config=config)

    # Crash (here: a cancel) after step 4; checkpoints are written every 2 steps.
    calls = {"train": 0}

    def callback(event):
        if event.stage == "train":
            calls["train"] += 1

    def cancel():
        return calls["train"] >= 4

    with pytest.raises(Cancelled):
        text_to_3d(_request(tiny_sd, tmp_path / "split"), Reporter(callback, cancel), config=config)
    ckpts = sorted(p.name for p in (tmp_path / "split" / "checkpoints").glob("*.pt"))
    assert ckpts == ["step_0000002.pt", "step_0000004.pt"]

    resumed = text_to_3d(_request(tiny_sd, tmp_path / "split"), config=config)
    assert resumed.resumed_from == 4 and resumed.steps == 6
    for (name, a), b in zip(whole.nerf.state_dict().items(), resumed.nerf.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert resumed.loss == whole.loss
    # A job restarted after it finished trains no more and reports the last loss.
    again = text_to_3d(_request(tiny_sd, tmp_path / "split"), config=config)
    assert again.resumed_from == 6 and again.loss == whole.loss


def test_resume_refuses_checkpoints_of_another_request(tiny_sd, tmp_path):
    config = _small_config(steps=2)
    text_to_3d(_request(tiny_sd, tmp_path), config=config)
    other = dataclasses.replace(_request(tiny_sd, tmp_path), prompt="a blue lamp")
    with pytest.raises(TextTo3DError, match="different request"):
        text_to_3d(other, config=config)


def test_bad_requests_say_what_to_do(tiny_sd, tmp_path):
    with pytest.raises(TextTo3DError, match="prompt is empty; describe"):
        text_to_3d(dataclasses.replace(_request(tiny_sd, None), prompt="   "))
    with pytest.raises(TextTo3DError, match="unknown preset 'ultra'; use one of draft, standard, high, cpu"):
        text_to_3d(_request(tiny_sd, None, preset="ultra"))
    with pytest.raises(TextTo3DError, match="unknown preset"):
        preset_config("ultra")
    with pytest.raises(GuidanceError, match="does not exist"):
        text_to_3d(
            dataclasses.replace(_request(tiny_sd, None), model=str(tmp_path / "nope")), config=_small_config()
        )
    (tmp_path / "empty").mkdir()
    with pytest.raises(GuidanceError, match="not a diffusers pipeline"):
        text_to_3d(
            dataclasses.replace(_request(tiny_sd, None), model=str(tmp_path / "empty")),
            config=_small_config(),
        )


def test_presets_grow_from_draft_to_high():
    sizes = [preset_config(p).train.height for p in ("draft", "standard", "high")]
    steps = [preset_config(p).train.steps for p in ("draft", "standard", "high")]
    assert sizes == sorted(sizes) and sizes[0] == 64
    assert steps == sorted(steps)


def test_cli_reports_bad_input_without_training(tmp_path, capsys):
    assert main(["--prompt", "", "--out", str(tmp_path / "o")]) == 2
    assert "prompt is empty" in capsys.readouterr().err
    assert main(["--prompt", "a cup", "--preset", "ultra", "--out", str(tmp_path / "o")]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert (
        main(["--prompt", "a cup", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_job_writes_glb_video_and_preview(tiny_sd, tmp_path, monkeypatch):
    from core.pipelines import text_to_3d as engine
    from core.pipelines.jobs import EngineSettings, run_job

    draft = engine.preset_config("draft")
    monkeypatch.setattr(
        engine,
        "preset_config",
        lambda p: dataclasses.replace(draft, train=dataclasses.replace(draft.train, steps=2)),
    )
    params = {
        "prompt": "a red chair",
        "seed": 1,
        "preset": "draft",
        "output": {"resolution": 64, "texture_size": 256, "turntable_frames": 2, "turntable_size": 64},
    }
    # The model is the operator's setting, not a job field.
    artifacts = run_job("text_to_3d", params, tmp_path, Reporter(), EngineSettings(text_model=str(tiny_sd)))
    assert sorted(artifacts) == ["asset.glb", "preview.png", "turntable.mp4"]
    assert artifacts["asset.glb"].read_bytes()[:4] == b"glTF"
    assert artifacts["preview.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert artifacts["turntable.mp4"].stat().st_size > 0
    assert (tmp_path / "checkpoints" / "step_0000002.pt").is_file()


def test_job_errors_are_job_errors(tiny_sd, tmp_path):
    from core.pipelines.jobs import EngineSettings, JobError, run_job

    settings = EngineSettings(text_model=str(tiny_sd))
    with pytest.raises(JobError, match="needs a prompt"):
        run_job("text_to_3d", {"prompt": ""}, tmp_path, Reporter(), settings)
    with pytest.raises(JobError, match="texture_size"):
        run_job(
            "text_to_3d", {"prompt": "a cup", "output": {"texture_size": 3}}, tmp_path, Reporter(), settings
        )
    with pytest.raises(JobError, match="unknown job parameter 'model'"):
        run_job("text_to_3d", {"prompt": "a cup", "model": str(tiny_sd)}, tmp_path, Reporter(), settings)


def test_cancel_inside_a_step_stops_before_the_update(tiny_sd):
    from core.guidance.stable_diffusion import StableDiffusionGuidance
    from core.pipelines.text_to_3d import Trainer

    config = _small_config(steps=4)
    inner = StableDiffusionGuidance(str(tiny_sd), "a red chair")
    flag = {"stop": False}

    def guidance(inp, generator):
        flag["stop"] = True  # the user presses cancel while the guidance runs
        return inner(inp, generator)

    trainer = Trainer(config, guidance, seed=0)
    before = [p.detach().clone() for p in trainer.nerf.parameters()]
    with pytest.raises(Cancelled):
        trainer.train_step(Reporter(cancel=lambda: flag["stop"]))
    assert trainer.step == 0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.nerf.parameters(), strict=True))


def test_progress_bar_is_tqdm_with_fraction_stage_and_message(capsys):
    from tqdm import tqdm

    from core.progress import ProgressBar, ProgressEvent

    bar = ProgressBar()
    assert isinstance(bar.bar, tqdm)
    bar(ProgressEvent("train", 0.5, "step 5/10 loss 1.5"))
    bar.bar.refresh()
    err = capsys.readouterr().err
    assert "train: " in err and " 50%" in err and "step 5/10 loss 1.5" in err
    bar(ProgressEvent("asset", 1.0, "done"))
    assert bar.bar.n == 1000  # and the bar is closed, so the CLI's own last line starts clean
