"""bench/gpu_check.py runs end to end at tiny sizes on the CPU, so the GPU session's one call works."""

from __future__ import annotations

import json
import re

import pytest


@pytest.fixture(scope="module")
def gpu_check_run(tmp_path_factory):
    from bench import gpu_check

    out = tmp_path_factory.mktemp("gpu_check") / "report.json"
    code = gpu_check.main(
        ["--tiny", "--device", "cpu", "--repeats", "1", "--train-steps", "1", "--json", str(out)]
    )
    return code, json.loads(out.read_text()), gpu_check


def test_gpu_check_reports_every_figure_the_issue_asks_for(gpu_check_run):
    code, report, _ = gpu_check_run
    assert code == 0
    # Guidance at the native size and 1.5x (512 and 768 on SD 2.1-base), SDPA and sliced.
    cells = {(r["resolution"], r["slicing"]) for r in report["guidance"]}
    assert cells == {(16, False), (16, True), (24, False), (24, True)}
    assert all(r["forward_s"] > 0 and r["backward_s"] > 0 for r in report["guidance"])
    # Every preset's step with its split, and the projection from its real step count.
    presets = {r["preset"]: r for r in report["presets"]}
    assert set(presets) == {"draft", "cpu", "standard", "high"}
    for name, steps in (("draft", 400), ("standard", 5000), ("high", 10000)):
        r = presets[name]
        assert r["steps"] == steps and r["loss_finite"]
        assert r["step_s"] == pytest.approx(r["render_s"] + r["guidance_s"] + r["backward_s"])
        assert r["projected_min"] == pytest.approx(r["step_s"] * steps / 60.0)
    assert presets["cpu"]["space"] == "latent" and presets["standard"]["space"] == "pixel"
    # fp16 (loss-scaled) and fp32 VAE gradients agree on the tiny model.
    assert report["vae_fp16_vs_fp32"]["cosine"] > 0.99
    assert 0.95 < report["vae_fp16_vs_fp32"]["norm_ratio"] < 1.05


def test_gpu_check_prints_one_parseable_summary_line(gpu_check_run, capsys):
    _, report, gpu_check = gpu_check_run
    line = gpu_check.summary_line(report)
    assert "\n" not in line and line.startswith("gpu_check: device=cpu components=tiny")
    assert re.search(r"standard=[0-9.]+s/step\(r[0-9.]+\+g[0-9.]+\+b[0-9.]+\)->[0-9.]+min", line)
    assert re.search(r"24sliced=[0-9.]+s/n/a", line)
    cos = re.search(r"cos=([0-9.]+) norm_ratio=", line)
    assert cos and float(cos.group(1)) == pytest.approx(report["vae_fp16_vs_fp32"]["cosine"], abs=1e-4)


def test_gpu_check_refuses_the_full_size_run_without_a_gpu(capsys):
    import torch

    from bench import gpu_check

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert gpu_check.main(["--device", "cpu"]) == 2
    assert "--tiny" in capsys.readouterr().out
