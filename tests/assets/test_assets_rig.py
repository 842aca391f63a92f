"""The avatar rig: a glTF skin and morph targets that validate, weights that sum to 1, a jaw that
moves the chin and not the nose, blinks that close one eye only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.assets.gltf import KILN_TO_GLTF
from core.assets.pipeline import AssetOptions, build_asset, rig_mesh
from core.assets.rig import BONES, SHAPE_KEYS, RigError, build_rig
from core.avatar.landmarks import estimate_landmarks
from core.avatar.procedural.engine import AvatarField
from core.avatar.vocab.attributes import AvatarAttributes
from tests.assets.test_assets_gltf import read_glb

SMALL = dict(resolution=128, texture_size=128, turntable_frames=0, turntable_size=64)
_COMPONENTS = {5121: np.uint8, 5125: np.uint32, 5126: np.float32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def _avatar(**attrs) -> AvatarField:
    field = AvatarField(AvatarAttributes(**attrs), seed=11)
    field.lipschitz = 2.0  # the engine's SDF is close to 1-Lipschitz: extraction skips empty space
    return field


@pytest.fixture(scope="module")
def avatar() -> AvatarField:
    return _avatar(beard="full", glasses="round", hair_style="short")


@pytest.fixture(scope="module")
def rigged(avatar, tmp_path_factory):
    out = tmp_path_factory.mktemp("rigged")
    result = build_asset(
        avatar,
        out,
        AssetOptions(**SMALL, rig=True),
        name="avatar",
        landmarks=lambda v: estimate_landmarks(avatar, v),
    )
    gltf, blob = read_glb(result.glb)
    return result, gltf, blob


def _accessor(gltf: dict, blob: bytes, index: int) -> np.ndarray:
    acc = gltf["accessors"][index]
    view = gltf["bufferViews"][acc["bufferView"]]
    width = _WIDTH[acc["type"]]
    data = np.frombuffer(blob, _COMPONENTS[acc["componentType"]], acc["count"] * width, view["byteOffset"])
    return data.reshape(acc["count"], width)


def _skin_data(gltf: dict, blob: bytes) -> dict:
    """Positions, joints, weights, morph deltas and joint world positions, back in Kiln space
    (still grounded and centred: ``offset`` moves engine landmarks into it)."""
    prim = gltf["meshes"][0]["primitives"][0]
    to_kiln = lambda a: a.astype(np.float64) @ KILN_TO_GLTF  # noqa: E731  (inverse of an orthogonal map)
    skin = gltf["skins"][0]
    world, nodes = {}, gltf["nodes"]

    def walk(i: int, parent: np.ndarray) -> None:
        world[nodes[i]["name"]] = parent + np.array(nodes[i].get("translation", [0, 0, 0]))
        for c in nodes[i].get("children", []):
            walk(c, world[nodes[i]["name"]])

    walk(skin["skeleton"], np.zeros(3))
    names = gltf["meshes"][0]["extras"]["targetNames"]
    return {
        "positions": to_kiln(_accessor(gltf, blob, prim["attributes"]["POSITION"])),
        "joints": _accessor(gltf, blob, prim["attributes"]["JOINTS_0"]).astype(np.int64),
        "weights": _accessor(gltf, blob, prim["attributes"]["WEIGHTS_0"]).astype(np.float64),
        "morphs": {
            n: to_kiln(_accessor(gltf, blob, t["POSITION"]))
            for n, t in zip(names, prim["targets"], strict=True)
        },
        "joint_world": {n: to_kiln(p[None])[0] for n, p in world.items()},
        "joint_order": [nodes[j]["name"] for j in skin["joints"]],
    }


def test_skin_and_morph_targets_pass_the_khronos_validator(rigged, validate_glb) -> None:
    result, gltf, _ = rigged
    report = validate_glb(result.glb)
    assert report.returncode == 0, report.stdout + report.stderr
    summary = json.loads(report.stdout)
    assert summary["numErrors"] == 0 and summary["numWarnings"] == 0, summary["messages"]
    (skin,) = gltf["skins"]
    assert [gltf["nodes"][j]["name"] for j in skin["joints"]] == list(BONES)
    assert gltf["accessors"][skin["inverseBindMatrices"]]["count"] == len(BONES)
    mesh = gltf["meshes"][0]
    assert mesh["extras"]["targetNames"] == list(SHAPE_KEYS) and mesh["weights"] == [0.0] * len(SHAPE_KEYS)
    for prim in mesh["primitives"]:  # one per part, all skinned, all with every morph target
        assert {"JOINTS_0", "WEIGHTS_0"} <= set(prim["attributes"])
        assert len(prim["targets"]) == len(SHAPE_KEYS)
    # The skinned mesh and the skeleton are both scene roots, the mesh node without a transform.
    assert gltf["scenes"][0]["nodes"] == [0, skin["skeleton"]] and gltf["nodes"][0]["skin"] == 0
    assert result.stats["rig"]["rigged"] is True and result.stats["rig"]["landmarks"]["method"] == "engine"
    assert "rig" in result.stats["timings"] and result.stats["timings"]["rig"] < 1.0


def test_each_vertex_has_at_most_four_weights_summing_to_one(rigged) -> None:
    _, gltf, blob = rigged
    d = _skin_data(gltf, blob)
    np.testing.assert_allclose(d["weights"].sum(axis=1), 1.0, atol=1e-6)
    assert d["weights"].min() >= 0 and d["joints"].max() < len(BONES)
    # The engine's parts: eyes turn rigidly with their bone, glasses with the head.
    used = {BONES[j] for j in np.unique(d["joints"][d["weights"] > 0])}
    assert used == set(BONES)


def _pose_jaw(d: dict, degrees: float) -> np.ndarray:
    """Linear blend skinning of the GLB's data with the jaw joint turned about X (same in both spaces)."""
    a = np.radians(degrees)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    jaw = BONES.index("jaw")
    hinge = d["joint_world"]["jaw"]
    turned = (d["positions"] - hinge) @ rot.T + hinge
    w_jaw = np.where(d["joints"] == jaw, d["weights"], 0.0).sum(axis=1)
    return d["positions"] + w_jaw[:, None] * (turned - d["positions"])


def test_turning_the_jaw_moves_the_chin_but_not_the_nose(rigged, avatar) -> None:
    _, gltf, blob = rigged
    d = _skin_data(gltf, blob)
    lm = avatar.landmarks()
    offset = d["joint_world"]["neck"] - lm["neck_base"]  # the GLB is grounded and centred
    moved = np.linalg.norm(_pose_jaw(d, 20.0) - d["positions"], axis=1)
    v = d["positions"] - offset
    chin = np.linalg.norm(v - lm["chin"], axis=1) < 0.01
    P = avatar.p
    tip_z = P.head_center[2] - 0.02 - P.sag
    near_tip = np.nonzero((np.abs(v[:, 0]) < 0.006) & (np.abs(v[:, 2] - tip_z) < 0.012))[0]
    tip = v[near_tip[np.argmin(v[near_tip, 1])]]  # the nose's front-most vertex
    nose = np.linalg.norm(v - tip, axis=1) < 0.006
    assert chin.sum() >= 3 and nose.sum() >= 1
    assert moved[chin].min() > 0.01, moved[chin].min()
    assert moved[nose].max() < 0.001, moved[nose].max()
    # The lower lip goes with the jaw, the upper lip and the eyes stay.
    mouth = (lm["mouth_l"] + lm["mouth_r"]) / 2
    lower = (
        (np.abs(v[:, 0]) < 0.01)
        & (v[:, 2] < mouth[2] - 0.004)
        & (v[:, 2] > mouth[2] - 0.012)
        & (v[:, 1] < mouth[1] + 0.004)
    )
    upper = (
        (np.abs(v[:, 0]) < 0.01)
        & (v[:, 2] > mouth[2] + 0.006)
        & (v[:, 2] < mouth[2] + 0.014)
        & (v[:, 1] < mouth[1] + 0.004)
    )
    assert lower.any() and upper.any()
    assert moved[lower].min() > 0.01 and moved[upper].max() < 0.002
    eyes = np.linalg.norm(v - lm["eye_l"], axis=1) < 0.02
    assert moved[eyes].max() < 1e-6


def test_blink_left_closes_the_left_eye_and_leaves_the_right(rigged, avatar) -> None:
    _, gltf, blob = rigged
    d = _skin_data(gltf, blob)
    lm = avatar.landmarks()
    v = d["positions"] - (d["joint_world"]["neck"] - lm["neck_base"])
    blink = d["morphs"]["blink_L"]
    r = avatar.p.eye_radius
    offset = d["joint_world"]["neck"] - lm["neck_base"]
    for bone, key in (("eye_L", "eye_l"), ("eye_R", "eye_r")):  # eye bones sit in the eye centres
        np.testing.assert_allclose(d["joint_world"][bone] - offset, lm[key], atol=1e-5)
    joints, weights = d["joints"], d["weights"]
    eyeball = (joints[:, 0] == BONES.index("eye_L")) & (weights[:, 0] == 1)
    upper_lid = (
        ~eyeball
        & (np.linalg.norm(v - lm["eye_l"], axis=1) < r + 0.006)
        & (v[:, 2] > lm["eye_l"][2] + 0.4 * r)
        & (v[:, 1] < lm["eye_l"][1])
    )
    assert upper_lid.sum() >= 3
    assert np.all(blink[upper_lid, 2] < -0.004), blink[upper_lid, 2]  # the lid comes down
    right = np.linalg.norm(v - lm["eye_r"], axis=1) < 0.03
    assert np.abs(blink[right]).max() == 0.0
    # ... and the eyeball itself does not move (it is rigid to its bone).
    assert eyeball.sum() > 10 and np.abs(blink[eyeball]).max() == 0.0
    # The other keys move what they name.
    assert np.abs(d["morphs"]["blink_R"][np.linalg.norm(v - lm["eye_l"], axis=1) < 0.03]).max() == 0.0
    for name in SHAPE_KEYS:
        assert np.linalg.norm(d["morphs"][name], axis=1).max() > 0.003, name


def test_rig_off_or_without_landmarks_writes_a_plain_glb(avatar, tmp_path) -> None:
    off = build_asset(avatar, tmp_path / "off", AssetOptions(**{**SMALL, "resolution": 64}))
    gltf, _ = read_glb(off.glb)
    assert "skins" not in gltf and "targets" not in gltf["meshes"][0]["primitives"][0]
    assert off.stats["rig"] == {"rigged": False, "reason": "rigging is off"}
    assert "rig" not in off.stats["timings"]
    none = build_asset(avatar, tmp_path / "none", AssetOptions(**{**SMALL, "resolution": 64}, rig=True))
    assert "skins" not in read_glb(none.glb)[0]
    assert none.stats["rig"]["rigged"] is False and "landmarks" in none.stats["rig"]["reason"]


def test_bad_landmarks_skip_the_rig_with_the_reason(rigged) -> None:
    result, _, _ = rigged
    with pytest.raises(RigError, match="missing"):
        build_rig(np.zeros((4, 3)), {"eye_l": np.zeros(3)}, 0.014)

    class Bad:
        def __call__(self, vertices):
            raise ValueError("only 3 surface points above the shoulders")

    from core.assets.texture import TexturedMesh

    mesh = TexturedMesh(
        np.zeros((3, 3), np.float32),
        np.array([[0, 1, 2]]),
        np.zeros((3, 2)),
        np.zeros((3, 3)),
        np.zeros((4, 4, 3), np.uint8),
    )
    same, info = rig_mesh(mesh, Bad())
    assert same.rig is None and info == {
        "rigged": False,
        "reason": "no rig: only 3 surface points above the shoulders",
    }
