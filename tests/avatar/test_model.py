"""The shipped avatar model: loading, generation, determinism, editing, bad inputs, and export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.assets import extract_mesh
from core.avatar.model import MAX_BATCH, WEIGHTS_DIR, AvatarModel, ModelError, default_model
from core.avatar.model.conditioning import condition_from_partial
from core.avatar.vocab.attributes import ATTRIBUTE_NAMES, AttributeValueError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model() -> AvatarModel:
    return AvatarModel.load(WEIGHTS_DIR)


def test_shipped_weights_are_small_and_described():
    weights = WEIGHTS_DIR / "model.safetensors"
    assert weights.stat().st_size < 60 * 2**20  # issue 12: at most 60 MB
    meta = json.loads((WEIGHTS_DIR / "model.json").read_text())
    assert meta["training"]["diffusion_steps"] > 0
    assert (WEIGHTS_DIR / "MODEL_CARD.md").read_text().count("|") > 10  # the metrics table


def test_shipped_model_generates_a_head_mesh_for_a_prompt(model):
    from core.avatar.vocab.resolve import resolve

    attrs = resolve("a young woman with a blonde ponytail and round glasses").attributes
    planes = model.generate(attrs, seed=1)
    assert planes.shape == (1, *model.plane_shape)
    mesh = extract_mesh(model.field(planes[0]), 64)
    assert mesh.num_faces > 1000
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    # A bust like the engine's: shoulders 0.39 m wide, from the floor (z = -0.305) to the top
    # of the head (z = 0.225 .. 0.245 m); the cube is [-0.32, 0.32]^3.
    assert hi[2] - lo[2] > hi[0] - lo[0]
    assert lo[2] < -0.25 and 0.15 < hi[2] < 0.3
    assert 0.3 < hi[0] - lo[0] < 0.5


def test_shipped_model_labels_parts_and_its_glb_has_one_material_per_part(model, tmp_path):
    import json as _json
    import struct

    from core.assets import AssetOptions, build_asset

    assert model.decoder.cfg.parts  # model v4 labels every point with an engine part
    planes = model.generate({"glasses": "round", "hair_style": "short", "headwear": "none"}, seed=2)
    field = model.field(planes[0])
    res = build_asset(field, tmp_path, AssetOptions(resolution=96, texture_size=256, turntable_frames=0))
    assert {"skin", "hair", "cloth"} <= set(res.parts), res.parts
    raw = res.glb.read_bytes()
    (n,) = struct.unpack_from("<I", raw, 12)
    gltf = _json.loads(raw[20 : 20 + n])
    names = [m["name"] for m in gltf["materials"]]
    assert len(names) == len(set(names)) == len(res.parts)
    assert sum(len(m["primitives"]) for m in gltf["meshes"]) == len(res.parts)


def test_same_seed_same_mesh_other_seed_other_avatar(model):
    a = model.generate({"hair_style": "bob"}, seed=7)
    b = model.generate({"hair_style": "bob"}, seed=7)
    c = model.generate({"hair_style": "bob"}, seed=8)
    assert torch.equal(a, b)
    m1, m2 = extract_mesh(model.field(a[0]), 64), extract_mesh(model.field(b[0]), 64)
    assert np.array_equal(m1.vertices, m2.vertices) and np.array_equal(m1.faces, m2.faces)
    assert not torch.allclose(a, c)


def test_editing_one_attribute_keeps_the_rest(model):
    # Same seed, one attribute changed: the planes stay closer to the original than another
    # seed with the same attributes is (the initial noise is shared).
    base = {"hair_style": "short", "glasses": "none", "skin_tone": "medium"}
    a = model.generate(base, seed=3)
    edited = model.generate({**base, "glasses": "round"}, seed=3)
    other = model.generate(base, seed=4)
    assert (edited - a).norm() < (other - a).norm()
    assert not torch.equal(edited, a)


def test_batch_of_n_matches_its_first_sample_size(model):
    planes = model.generate({}, seed=0, n=3, steps=5)
    assert planes.shape[0] == 3 and torch.isfinite(planes).all()


def test_bad_inputs_raise_clear_errors(model):
    with pytest.raises(AttributeValueError, match="use one of"):
        model.generate({"hair_style": "mohawk"})
    with pytest.raises(AttributeValueError, match="known attributes"):
        model.generate({"wings": "yes"})
    with pytest.raises(ValueError, match=f"between 1 and {MAX_BATCH}"):
        model.generate({}, n=10_000)
    with pytest.raises(ValueError, match="guidance_scale"):
        model.generate({}, guidance_scale=0.0)
    with pytest.raises(ValueError, match="steps"):
        model.generate({}, steps=0)


def test_missing_or_mismatched_weights(tmp_path, monkeypatch):
    with pytest.raises(ModelError, match="not found"):
        AvatarModel.load(tmp_path)
    (tmp_path / "model.safetensors").write_bytes((WEIGHTS_DIR / "model.safetensors").read_bytes())
    meta = json.loads((WEIGHTS_DIR / "model.json").read_text())
    meta["attributes"] = meta["attributes"][::-1]  # not a prefix of today's attributes
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="retrain"):
        AvatarModel.load(tmp_path)
    monkeypatch.setenv("KILN_AVATAR_MODEL", str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match="not found"):
        default_model()


@pytest.mark.slow
def test_smoke_training_exports_a_loadable_model(tmp_path):
    from core.avatar.model.train import export, preset, run

    cfg = preset("smoke")
    assert run("all", cfg, tmp_path / "work", max_minutes=5, log=lambda m: None)
    # Resuming a finished run does nothing and still reports success.
    assert run("all", cfg, tmp_path / "work", max_minutes=5, log=lambda m: None)
    path = export(cfg, tmp_path / "work", tmp_path / "out")
    m = AvatarModel.load(path.parent)
    planes = m.generate({"age": "young"}, seed=2, n=2, steps=3)
    assert planes.shape == (2, 3, cfg.triplane.channels, cfg.triplane.resolution, cfg.triplane.resolution)
    assert m.meta["training"]["n_avatars"] == cfg.n_avatars


def test_smooth_planes_keeps_constants_and_planes_apart():
    from core.avatar.model import smooth_planes
    from core.avatar.model.triplane import tv_loss

    const = torch.full((1, 2, 8, 24), 3.0)
    assert torch.allclose(smooth_planes(const, 0.7), const)  # the kernel sums to 1, edges replicated
    x = torch.randn(2, 2, 8, 24, generator=torch.Generator().manual_seed(0))
    assert torch.equal(smooth_planes(x, 0.0), x)
    y = smooth_planes(x, 0.5)
    assert tv_loss(y) < 0.6 * tv_loss(x)  # white noise loses most of its neighbour differences
    # Each plane is blurred on its own: a plane of zeros next to a plane of ones stays exact.
    step = torch.cat([torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)], dim=-1)
    assert torch.allclose(smooth_planes(step, 1.0), step, atol=1e-6)


def test_completed_attributes_keep_what_was_asked_and_draw_the_rest_per_seed(model):
    asked = {"hair_style": "bob", "glasses": "round"}
    rows = model.completed_attributes(asked, seed=5, n=4, complete=True)
    assert all(
        len(r) == len(ATTRIBUTE_NAMES) and r["hair_style"] == "bob" and r["glasses"] == "round" for r in rows
    )
    assert len({tuple(sorted(r.items())) for r in rows}) > 1  # each sample its own draw
    assert rows == model.completed_attributes(asked, seed=5, n=4, complete=True)  # deterministic
    # Asking for one more attribute changes that one only (each attribute has its own draw;
    # clothing depends on nothing else).
    more = model.completed_attributes({**asked, "clothing": "hoodie"}, seed=5, n=4, complete=True)
    for r, m in zip(rows, more, strict=True):
        assert {k for k in r if r[k] != m[k]} <= {"clothing"}
    assert model.completed_attributes(asked, seed=5, n=2, complete=False) == [asked, asked]
    # The planes follow the completed attributes: completion changes the sample.
    a = model.generate(asked, seed=5, complete=True, steps=5)
    b = model.generate(asked, seed=5, complete=False, steps=5)
    assert not torch.allclose(a, b)


def test_variation_scales_the_sample_between_the_attribute_mean_and_the_full_sample(model):
    if model.normalizer.effects is None:
        pytest.skip("the shipped model has no attribute means")
    asked = {"hair_style": "bun", "clothing": "hoodie"}
    full = model.generate(asked, seed=2, steps=5, variation=1.0, smooth=0.0, surface_smooth=0.0)
    half = model.generate(asked, seed=2, steps=5, variation=0.5, smooth=0.0, surface_smooth=0.0)
    mean = model.generate(asked, seed=2, steps=5, variation=0.0, smooth=0.0, surface_smooth=0.0)
    assert torch.allclose(half, (full + mean) / 2, atol=1e-4)
    cond = torch.from_numpy(
        np.stack([condition_from_partial(r) for r in model.completed_attributes(asked, 2, 1)])
    )
    assert torch.allclose(mean[0], model.normalizer.centre(cond)[0], atol=1e-5)
    with pytest.raises(ValueError, match="variation"):
        model.generate(asked, variation=3.0)


def test_parts_are_painted_in_the_asked_for_colours_and_eyes_are_left_alone(model):
    from core.avatar.model.avatar_model import paint_for
    from core.avatar.vocab.palettes import CLOTH, HAIR
    from core.avatar.vocab.parts import PART_NAMES

    attrs = {"hair_color": "grey", "clothing_color": "red", "hair_style": "long", "beard": "full"}
    planes = model.generate(attrs, seed=7, steps=5)
    full = model.completed_attributes(attrs, 7, 1)[0]
    bare, painted = model.field(planes[0]), model.field(planes[0], full, attach=False)
    mesh = extract_mesh(bare, 64)
    parts = bare.fine_parts(mesh.vertices)
    before, after = bare.albedo(mesh.vertices), painted.albedo(mesh.vertices)
    # Geometry and labels do not change; only colours do.
    assert np.array_equal(bare.value(mesh.vertices), painted.value(mesh.vertices))
    for part, target in (("hair", HAIR["grey"]), ("cloth", CLOTH["red"])):
        sel = parts == PART_NAMES.index(part)
        assert sel.sum() > 50, part
        d0 = np.abs(before[sel].mean(0) - target).sum()
        d1 = np.abs(after[sel].mean(0) - target).sum()
        assert d1 < 0.35 * d0 + 1e-3, (part, d0, d1)  # 75 % of the way to the palette colour
    eyes = parts == PART_NAMES.index("eyes")
    np.testing.assert_array_equal(before[eyes], after[eyes])
    assert paint_for(None) is None and "eyes" not in paint_for(full)


def test_surface_smoothing_takes_the_texel_lumps_off_the_whole_planes(model):
    asked = {"hair_style": "short", "glasses": "round"}
    raw = model.generate(asked, seed=4, steps=5, surface_smooth=0.0)
    smooth = model.generate(asked, seed=4, steps=5, surface_smooth=0.75)

    def tv(p: torch.Tensor) -> float:
        return float((p[..., 1:, :] - p[..., :-1, :]).abs().mean() + (p[..., 1:] - p[..., :-1]).abs().mean())

    assert tv(smooth) < 0.8 * tv(raw)
    assert torch.allclose(smooth.mean(dim=(-1, -2)), raw.mean(dim=(-1, -2)), atol=0.02)
    assert model.default_surface_smooth == 0.75  # the shipped model's, from model.json
    with pytest.raises(ValueError, match="surface_smooth"):
        model.generate(asked, surface_smooth=9.0)
