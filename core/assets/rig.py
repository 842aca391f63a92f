"""A face rig from landmarks: six bones, smooth skin weights and five expression shape keys.

Pure numpy, so the asset path rigs an avatar without Blender; ``gltf.build_glb`` writes the
result as a glTF skin and morph targets, which Blender's importer turns into an armature,
vertex groups and shape keys.

Bones (parents in brackets): root (-) at the bust's base, neck (root) at the neck base, head
(neck) at the top of the neck, jaw (head) at the jaw hinges, eye_L and eye_R (head) at the eye
centres. Every joint's bind pose is a translation only (no rotation).

Weights follow the material parts and the landmarks:

- skin and hair: root below the neck base, the neck inside the neck's cylinder, the head above;
  the jaw takes what lies below the mouth line, in front of the jaw hinges and above the jaw
  line (the chin, the lower lip, a beard), never the nose or the upper lip;
- eyes: rigidly to their eye bone; glasses and hat: rigidly to the head;
- cloth: the root, blending to the neck at a collar.

At most four bones influence a vertex (root, neck, head, jaw) and the weights sum to 1.

Shape keys are displacements with smooth falloff: ``jaw_open`` turns the jaw's region about
the hinge axis, ``smile`` pulls the mouth corners out, back and up, ``blink_L``/``blink_R`` roll
the upper lid down over the eyeball (on a sphere about the eye centre, so it never cuts the
eye), ``brow_raise`` lifts the brows and the skin over them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BONES: tuple[str, ...] = ("root", "neck", "head", "jaw", "eye_L", "eye_R")
PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 2, 2)
SHAPE_KEYS: tuple[str, ...] = ("jaw_open", "smile", "blink_L", "blink_R", "brow_raise")
LANDMARKS_NEEDED = ("eye_l", "eye_r", "mouth_l", "mouth_r", "chin", "jaw_l", "jaw_r", "neck_base", "head_top")

NECK_RADIUS = 0.05
"""Metres; the neck's cylinder for the neck bone's weights (the engine's necks are 4.4-5.2 cm)."""
JAW_OPEN_DEG = 18.0
"""How far ``jaw_open`` = 1 opens the jaw."""
BLINK_DEG = 50.0
"""How far ``blink`` = 1 rolls the upper lid down: from above the iris to the lower lid."""
SMILE_M = np.array([0.004, 0.003, 0.005])
"""Mouth-corner pull of ``smile`` = 1 (outwards, back, up), metres."""
BROW_RAISE_M = 0.005

RIGID_HEAD = ("glasses", "hat")


class RigError(ValueError):
    """The landmarks cannot rig this mesh (missing or misplaced); the message says which."""


@dataclass
class Rig:
    """Bones, skin weights and shape keys of one mesh.

    Attributes:
        joint_positions: (6, 3) float32 world position of each of ``BONES`` (Kiln space).
        joints: (V, 4) uint8 indices into ``BONES`` of each vertex's influences (unused ones 0).
        weights: (V, 4) float32 weights of those influences, summing to 1 per vertex.
        shape_keys: {name: (V, 3) float32 displacement at weight 1}, in ``SHAPE_KEYS`` order.
        info: figures for the asset's stats (bones, shape keys, landmark method, ...).
    """

    joint_positions: np.ndarray
    joints: np.ndarray
    weights: np.ndarray
    shape_keys: dict[str, np.ndarray]
    info: dict = field(default_factory=dict)

    bones: tuple[str, ...] = BONES
    parents: tuple[int, ...] = PARENTS

    def dense_weights(self) -> np.ndarray:
        """(V, len(BONES)) float32 weights, one column per bone."""
        out = np.zeros((len(self.joints), len(self.bones)), np.float32)
        np.add.at(out, (np.arange(len(self.joints))[:, None], self.joints.astype(np.int64)), self.weights)
        return out

    def take(self, index: np.ndarray) -> Rig:
        """The rig of a mesh whose vertex i is this mesh's vertex ``index[i]``."""
        return Rig(
            self.joint_positions,
            self.joints[index],
            self.weights[index],
            {k: v[index] for k, v in self.shape_keys.items()},
            dict(self.info),
        )


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """0 at ``edge0``, 1 at ``edge1``, C1 in between; edges may be in either order."""
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _rot_x(angle_rad: float) -> np.ndarray:
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def vertex_parts(
    num_vertices: int, faces: np.ndarray, face_parts: np.ndarray | None, part_names: tuple[str, ...]
) -> np.ndarray | None:
    """(V,) part name of each vertex from its faces' labels, or None without labels.

    A vertex on a border takes the part of its most specific neighbour (eyes over glasses over
    hat over hair over cloth over skin), so an eyeball's rim turns with the eye.
    """
    if face_parts is None or not part_names:
        return None
    order = ["skin", "cloth", "hair", "hat", "glasses", "eyes"]
    rank = np.array([order.index(n) if n in order else 0 for n in part_names])
    best = np.full(num_vertices, -1, np.int64)
    face_rank = rank[np.asarray(face_parts, np.int64)]
    for corner in range(3):
        np.maximum.at(best, np.asarray(faces)[:, corner], face_rank)
    names = np.array(order + ["skin"], dtype=object)
    return names[np.where(best < 0, len(order), best)]


def _check_landmarks(lm: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    missing = [k for k in LANDMARKS_NEEDED if k not in lm]
    if missing:
        raise RigError(
            f"landmarks {', '.join(missing)} are missing; the rig needs {', '.join(LANDMARKS_NEEDED)}"
        )
    out = {k: np.asarray(lm[k], np.float64).reshape(3) for k in LANDMARKS_NEEDED}
    if not all(np.isfinite(v).all() for v in out.values()):
        raise RigError("landmarks must be finite")
    if not out["eye_l"][0] > out["eye_r"][0] or not out["head_top"][2] > out["chin"][2] > out["neck_base"][2]:
        raise RigError(
            "landmarks are misplaced: the left eye must be at +X, the head top above the chin above the neck"
        )
    return out


def jaw_region(v: np.ndarray, lm: dict[str, np.ndarray]) -> np.ndarray:
    """(V,) 0..1: how much of each point belongs to the jaw (before the head/neck split)."""
    hinge = (lm["jaw_l"] + lm["jaw_r"]) / 2
    mouth = (lm["mouth_l"] + lm["mouth_r"]) / 2
    corner_x = abs(lm["mouth_l"][0] - lm["mouth_r"][0]) / 2
    chin = lm["chin"]
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    # a) below the mouth line: a sharp split between the lips, softer out on the cheeks
    width = 0.0015 + 0.5 * np.maximum(np.abs(x - mouth[0]) - corner_x, 0.0)
    below_mouth = _smoothstep(mouth[2] + width, mouth[2] - width, z)
    # b) in front of the hinges
    front = _smoothstep(hinge[1] + 0.01, hinge[1] - 0.025, y)
    # c) above the jaw line, from under the chin to the jaw's angle below the hinge
    p1 = np.array([chin[1] + 0.01, chin[2] - 0.012])
    p2 = np.array([hinge[1] - 0.012, hinge[2] - 0.045])
    d = p2 - p1
    normal = np.array([d[1], -d[0]]) / np.linalg.norm(d)  # points down-and-forward
    if normal[1] > 0:
        normal = -normal
    below = (y - p1[0]) * normal[0] + (z - p1[1]) * normal[1]
    above_line = _smoothstep(0.02, 0.0, below)
    return below_mouth * front * above_line


def build_rig(
    vertices: np.ndarray,
    landmarks: dict[str, np.ndarray],
    eye_radius: float,
    parts: np.ndarray | None = None,
) -> Rig:
    """The rig of a mesh with ``vertices`` (V, 3), Kiln space, from its ``landmarks``.

    Args:
        vertices: mesh vertices in the same space as the landmarks (metres, Z up, face -Y).
        landmarks: the avatar's named points (``core.avatar.landmarks``); all of ``LANDMARKS_NEEDED``.
        eye_radius: eyeball radius (metres): eye vertices without part labels are those within
            it (plus 1 mm) of an eye centre, and the blink rolls the lid at that radius.
        parts: (V,) material name of each vertex (``vertex_parts``), or None: then every vertex is
            treated as skin except the eyeballs found by distance.
    """
    v = np.asarray(vertices, np.float64).reshape(-1, 3)
    lm = _check_landmarks(landmarks)
    n = len(v)
    r_eye = float(eye_radius)
    if parts is None:
        parts = np.full(n, "skin", dtype=object)
        for key in ("eye_l", "eye_r"):
            parts[np.linalg.norm(v - lm[key], axis=1) < r_eye + 0.001] = "eyes"
    parts = np.asarray(parts, dtype=object)
    if parts.shape != (n,):
        raise RigError(f"parts must be ({n},), got {parts.shape}")
    eyes = parts == "eyes"
    rigid_head = np.isin(parts, RIGID_HEAD)
    cloth = parts == "cloth"

    # Joints.
    hinge = (lm["jaw_l"] + lm["jaw_r"]) / 2
    neck_base = lm["neck_base"]
    head_joint = np.array([0.0, neck_base[1], hinge[2] - 0.015])
    root = np.array([0.0, neck_base[1], v[:, 2].min()])
    joint_positions = np.stack([root, neck_base, head_joint, hinge, lm["eye_l"], lm["eye_r"]])

    # Weights over root, neck, head, jaw (columns 0..3), then the rigid parts.
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    r_xy = np.hypot(x, y - neck_base[1])
    in_neck = _smoothstep(1.6 * NECK_RADIUS, 1.05 * NECK_RADIUS, r_xy)
    below_head = _smoothstep(head_joint[2] + 0.01, head_joint[2] - 0.04, z)
    below_neck_base = _smoothstep(neck_base[2] + 0.03, neck_base[2] - 0.03, z)
    jaw = jaw_region(v, lm)
    w = np.zeros((n, 4))
    w[:, 0] = below_neck_base
    rest = 1 - below_neck_base
    w[:, 1] = rest * in_neck * below_head
    head_total = rest * (1 - in_neck * below_head)
    w[:, 3] = head_total * jaw
    w[:, 2] = head_total * (1 - jaw)
    collar = _smoothstep(neck_base[2] - 0.02, neck_base[2] + 0.08, z) * in_neck
    w[cloth] = np.stack([1 - collar[cloth], collar[cloth], 0 * collar[cloth], 0 * collar[cloth]], 1)
    w[rigid_head] = [0, 0, 1, 0]
    joints = np.tile(np.arange(4, dtype=np.uint8), (n, 1))
    left = eyes & (x >= 0)
    joints[eyes] = [BONES.index("eye_R"), 0, 0, 0]
    joints[left] = [BONES.index("eye_L"), 0, 0, 0]
    w[eyes] = [1, 0, 0, 0]
    w = np.where(w < 1e-4, 0.0, w)
    w /= w.sum(axis=1, keepdims=True)
    weights = w.astype(np.float32)
    # the float32 rounding goes on the largest weight, so each row's exact sum is 1 to ~1e-7
    # (the Khronos validator allows 2e-7 per non-zero weight)
    top = np.argmax(weights, axis=1)
    rows = np.arange(n)
    weights[rows, top] += (1.0 - weights.astype(np.float64).sum(axis=1)).astype(np.float32)
    joints[weights == 0] = 0  # unused influences point at the root

    # Shape keys.
    movable = ~(eyes | rigid_head)
    keys: dict[str, np.ndarray] = {}
    # jaw_open: the jaw's own weights turned about the hinge axis
    turned = (v - hinge) @ _rot_x(np.radians(JAW_OPEN_DEG)).T + hinge
    jaw_w = np.where(joints == BONES.index("jaw"), weights, 0).sum(axis=1)
    keys["jaw_open"] = (turned - v) * jaw_w[:, None]
    # smile: each corner pulled out, back and up
    smile = np.zeros_like(v)
    for key, side in (("mouth_l", 1.0), ("mouth_r", -1.0)):
        g = np.exp(-np.sum((v - lm[key]) ** 2, axis=1) / (2 * 0.013**2))
        g *= _smoothstep(lm[key][1] + 0.03, lm[key][1] + 0.01, y)
        smile += g[:, None] * (SMILE_M * [side, 1, 1])
    keys["smile"] = smile * movable[:, None]
    # blinks: the upper lid rolled down on a sphere about the eye centre
    for name, key in (("blink_L", "eye_l"), ("blink_R", "eye_r")):
        c = lm[key]
        d = np.linalg.norm(v - c, axis=1)
        lid = _smoothstep(r_eye + 0.010, r_eye + 0.004, d)
        lid *= _smoothstep(c[2] - 0.2 * r_eye, c[2] + 0.2 * r_eye, z)
        lid *= _smoothstep(c[1] + 0.6 * r_eye, c[1], y)
        rolled = (v - c) @ _rot_x(np.radians(BLINK_DEG)).T + c
        keys[name] = (rolled - v) * (lid * movable)[:, None]
    # brow_raise: the brows and the skin over them lifted
    lift = np.zeros(n)
    for key, side in (("eye_l", 1.0), ("eye_r", -1.0)):
        c = lm[key] + [side * 0.002, 0.0, 0.027]
        lift += np.exp(-0.5 * (((x - c[0]) / 0.022) ** 2 + ((z - c[2]) / 0.012) ** 2))
    lift *= _smoothstep(lm["eye_l"][1] + 0.03, lm["eye_l"][1] + 0.01, y) * movable
    keys["brow_raise"] = np.stack([0 * lift, 0 * lift, BROW_RAISE_M * np.minimum(lift, 1.0)], 1)
    keys = {k: keys[k].astype(np.float32) for k in SHAPE_KEYS}

    info = {
        "bones": list(BONES),
        "shape_keys": list(SHAPE_KEYS),
        "max_influences": int((weights > 0).sum(axis=1).max()),
    }
    return Rig(joint_positions.astype(np.float32), joints, weights, keys, info)


def pose(
    rig: Rig,
    vertices: np.ndarray,
    rotations: dict[str, np.ndarray],
    shape_keys: dict[str, float] | None = None,
) -> np.ndarray:
    """Vertices with ``shape_keys`` applied, then skinned (linear blend) with each bone turned by
    ``rotations[bone]`` (3x3) about its joint, parents first; unnamed bones stay in bind pose."""
    v = np.asarray(vertices, np.float64) + sum(
        (w * rig.shape_keys[k].astype(np.float64) for k, w in (shape_keys or {}).items()),
        np.zeros((len(vertices), 3)),
    )
    globals_: list[np.ndarray] = []
    for i, parent in enumerate(rig.parents):
        local = np.eye(4)
        local[:3, :3] = rotations.get(rig.bones[i], np.eye(3))
        bind = np.eye(4)
        bind[:3, 3] = rig.joint_positions[i]
        inv_bind = np.eye(4)
        inv_bind[:3, 3] = -rig.joint_positions[i]
        own = bind @ local @ inv_bind  # turn about the joint
        globals_.append(own if parent < 0 else globals_[parent] @ own)
    mats = np.stack(globals_)  # (B, 4, 4) skinning matrices
    hom = np.concatenate([v, np.ones((len(v), 1))], 1)
    per = np.einsum("vkij,vj->vki", mats[rig.joints.astype(np.int64)], hom)[..., :3]
    return np.einsum("vk,vki->vi", rig.weights.astype(np.float64), per)
