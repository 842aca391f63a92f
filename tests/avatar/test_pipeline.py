"""The avatar job: prompt + overrides -> attributes.json, GLB, preview, video; errors people can act on."""

from __future__ import annotations

import json

import pytest
import torch

from core.avatar.vocab.resolve import resolve
from core.pipelines.avatar import AvatarRequest, avatar
from core.pipelines.jobs import JobError, run_job
from core.progress import Cancelled, Reporter
from tests.assets.test_assets_gltf import read_glb

torch.set_num_threads(1)

SMALL = {"resolution": 64, "texture_size": 256, "turntable_frames": 2, "turntable_size": 64}


def test_explicit_attributes_win_over_the_prompt():
    resolved = resolve("a woman with a red bob and round glasses", {"glasses": "square"})
    attrs, sources = resolved.attributes, resolved.sources
    assert attrs["hair_style"] == "bob" and attrs["hair_color"] == "red"
    assert attrs["glasses"] == "square" and sources["glasses"] == "request"
    assert sources["hair_style"] == "prompt"


def test_unknown_override_is_a_job_error():
    with pytest.raises(JobError, match="use one of"):
        avatar(AvatarRequest(attributes={"hair_style": "mohawk"}))


@pytest.mark.slow
def test_job_writes_artifacts_and_reports_what_it_understood(tmp_path):
    events = []
    params = {
        "prompt": "an elderly person who is bald with long hair, wearing a zorbly hat",
        "seed": 5,
        "attributes": {"clothing_color": "green"},
        "output": SMALL,
    }
    arts = run_job("avatar", params, tmp_path, Reporter(callback=events.append))
    for name in ("asset.glb", "preview.png", "attributes.json", "turntable.mp4"):
        assert arts[name].is_file() and arts[name].stat().st_size > 0
    assert arts["asset.glb"].read_bytes()[:4] == b"glTF"
    record = json.loads(arts["attributes.json"].read_text())
    assert record["attributes"]["clothing_color"] == "green"
    assert record["attributes"]["age"] == "elderly"
    assert "zorbly" in record["unknown_words"]
    # "bald with long hair": a stated resolution, not a crash.
    assert any("hair_style" in c for c in record["conflicts"])
    assert record["attributes"]["hair_style"] in ("bald", "long")
    assert "eye_color" in record["unspecified"]
    # The shipped model draws what the prompt left open; the record says what the seed chose,
    # without a hat colour when no hat was drawn.
    drawn = record["drawn"]
    assert set(drawn) | set(record["attributes"]) >= set(record["unspecified"]) - {"headwear_color"}
    assert drawn["eye_color"] in ("brown", "blue", "green", "grey") and not set(drawn) & set(
        record["attributes"]
    )
    headwear = {**record["attributes"], **drawn}["headwear"]
    assert ("headwear_color" in drawn) == (
        headwear != "none" and "headwear_color" not in record["attributes"]
    )
    # Avatar jobs are rigged by default, and attributes.json says with what.
    gltf, _ = read_glb(arts["asset.glb"])
    assert len(gltf["skins"]) == 1 and record["stats"]["rig"]["rigged"] is True
    assert record["stats"]["rig"]["bones"] == ["root", "neck", "head", "jaw", "eye_L", "eye_R"]
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(e.stage == "sample" for e in events)
    # Resume: the sampled planes were checkpointed and are reused bit for bit.
    saved = torch.load(tmp_path / "checkpoints" / "avatar_planes.pt", weights_only=False)
    again = run_job("avatar", params, tmp_path, Reporter())
    assert torch.equal(torch.load(tmp_path / "checkpoints" / "avatar_planes.pt", weights_only=False)["planes"],
                       saved["planes"])  # fmt: skip
    assert again["asset.glb"].is_file()


def test_bad_requests_fail_before_any_file_is_written(tmp_path):
    with pytest.raises(JobError, match="use one of"):
        run_job("avatar", {"attributes": {"glasses": "monocle"}, "output": SMALL}, tmp_path / "a", Reporter())
    with pytest.raises(JobError, match="guidance_scale"):
        run_job("avatar", {"guidance_scale": 50.0, "output": SMALL}, tmp_path / "b", Reporter())
    with pytest.raises(JobError):
        run_job("avatar", {"output": {**SMALL, "resolution": 4}}, tmp_path / "c", Reporter())
    assert not (tmp_path / "a" / "asset.glb").exists()
    assert not (tmp_path / "b" / "asset.glb").exists()


def test_huge_batch_is_refused_with_the_limit():
    with pytest.raises(JobError, match="split larger batches"):
        avatar(AvatarRequest(n=100_000))


def test_cancel_stops_sampling():
    with pytest.raises(Cancelled):
        avatar(AvatarRequest(prompt="a person"), Reporter(cancel=lambda: True))


@pytest.mark.slow
def test_batch_builds_every_avatar_in_worker_processes_and_resumes(tmp_path):
    from core.assets import AssetOptions
    from core.pipelines.avatar import make_batch

    options = AssetOptions(resolution=64, texture_size=64, turntable_frames=0)
    request = AvatarRequest(prompt="a man with a beanie", n=3, seed=2)
    summary = make_batch(request, tmp_path, options, workers=2)
    glbs = [tmp_path / f"avatar_{i:03d}" / "asset.glb" for i in range(3)]
    assert all(g.read_bytes()[:4] == b"glTF" for g in glbs)
    assert len({g.read_bytes() for g in glbs}) == 3  # three different avatars
    assert summary["attributes"]["headwear"] == "beanie"
    assert all(a["built_now"] and a["stats"]["faces"] > 1000 for a in summary["avatars"])
    # A lost avatar (crash, deleted file) is rebuilt alone, identical; the others are kept.
    kept = glbs[0].stat().st_mtime_ns
    lost = glbs[1].read_bytes()
    glbs[1].unlink()
    again = make_batch(request, tmp_path, options, workers=1)
    assert [a["built_now"] for a in again["avatars"]] == [False, True, False]
    assert glbs[0].stat().st_mtime_ns == kept and glbs[1].read_bytes() == lost
    assert again["avatars"][0]["stats"] == summary["avatars"][0]["stats"]


def test_rig_false_gives_a_bare_mesh_and_the_record_says_so(tmp_path):
    arts = run_job(
        "avatar", {"seed": 2, "rig": False, "output": {**SMALL, "turntable_frames": 0}}, tmp_path, Reporter()
    )
    gltf, _ = read_glb(arts["asset.glb"])
    assert "skins" not in gltf and all("targets" not in p for m in gltf["meshes"] for p in m["primitives"])
    assert json.loads(arts["attributes.json"].read_text())["stats"]["rig"] == {
        "rigged": False,
        "reason": "rigging is off",
    }
    with pytest.raises(JobError, match="rig must be true or false"):
        run_job("avatar", {"rig": "no"}, tmp_path / "b", Reporter())
    with pytest.raises(JobError, match="text_to_3d jobs do not read rig"):
        run_job("text_to_3d", {"prompt": "a cup", "rig": False}, tmp_path / "c", Reporter())


def test_batch_cli_names_a_bad_attribute(tmp_path, capsys):
    from core.pipelines.avatar import main

    assert main(["--attr", "glasses=monocle", "--out", str(tmp_path)]) == 2
    assert "glasses" in capsys.readouterr().err
    assert not list(tmp_path.glob("avatar_*"))


def test_variation_reaches_the_model_and_out_of_range_is_a_job_error(tmp_path):
    a = avatar(AvatarRequest(prompt="a man with a beanie", seed=4, steps=5, variation=0.0))
    b = avatar(AvatarRequest(prompt="a man with a beanie", seed=4, steps=5, variation=1.0))
    assert not torch.equal(a.planes, b.planes)
    with pytest.raises(JobError, match="variation"):
        run_job("avatar", {"variation": 9.0, "output": SMALL}, tmp_path, Reporter())


def test_batch_cli_says_how_to_recover_from_an_unwritable_folder(tmp_path, capsys):
    from core.pipelines.avatar import main

    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert main(["--prompt", "a man", "--out", str(blocked / "batch")]) == 1
    assert "run the same command again" in capsys.readouterr().err


def test_a_variant_keeps_every_attribute_but_the_one_it_changes():
    from core.avatar.vocab.resolve import resolve as merge

    # base < prompt < request.
    r = merge(
        "with a red cap", {"glasses": "round"}, base={"headwear": "none", "glasses": "none", "beard": "full"}
    )
    assert r.attributes["headwear"] == "cap" and r.sources["headwear"] == "prompt"
    assert r.attributes["glasses"] == "round" and r.sources["glasses"] == "request"
    assert r.attributes["beard"] == "full" and r.sources["beard"] == "base"
    # The original: a prompt, the rest drawn by the seed.
    first = avatar(AvatarRequest(prompt="an elderly man with a beard", seed=7, steps=5))
    full = first.completed[0]
    assert set(full) > set(first.attributes)  # the seed drew some
    # Kept whole, the same seed gives the same avatar.
    same = avatar(AvatarRequest(seed=7, steps=5, base_attributes=full))
    assert torch.equal(same.planes, first.planes)
    # One change from the prompt: only that attribute (and the hat's colour with it) differs.
    variant = avatar(AvatarRequest(prompt="with a red cap", seed=7, steps=5, base_attributes=full))
    changed = {k for k in full if variant.completed[0].get(k) != full[k]}
    assert variant.completed[0]["headwear"] == "cap" and variant.completed[0]["headwear_color"] == "red"
    assert changed <= {"headwear", "headwear_color"} and "headwear" in changed
    assert not torch.equal(variant.planes, first.planes)
    with pytest.raises(JobError, match="use one of"):
        avatar(AvatarRequest(base_attributes={"hair_style": "mohawk"}))
