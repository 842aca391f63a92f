"""The procedural avatar engine (v2): attributes -> a head-and-shoulders SDF made of named parts.

Every part (skin, lips, brows, eyes, hair, beard, moustache, glasses, hat, cloth) is its own
signed distance, so tests, evaluations, the tri-plane decoder's part labels and the rig all
label surfaces through ``AvatarField.parts`` and ``AvatarField.landmarks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from core.avatar.procedural import sdf
from core.avatar.vocab.attributes import AvatarAttributes
from core.avatar.vocab.palettes import IRIS, PUPIL, part_colours
from core.avatar.vocab.parts import LANDMARK_PARTS, MATERIAL_OF, MATERIALS, PART_NAMES, material_lut
from core.fields.base import Field

HALF_EXTENT = 0.32
"""The avatar lives in the cube [-HALF_EXTENT, HALF_EXTENT]^3 (metres), the bust's base at its floor."""
HAT_EDGE = 0.056
"""Height (metres above the head centre) of a hat's lower edge at the front: just above the
brows' arch (0.043-0.053), so a cap or beanie never hides the brows or eyes. Hats sit lower at
the back (``HAT_BACK``), over the hair, as they are worn."""
HAT_BACK = {"cap": 0.035, "beanie": 0.012}
"""Height of a hat's lower edge at the back of the head (metres above the head centre)."""


STUBBLE_SHARE = 0.45
"""How far stubble takes the jaw's skin colour towards the hair colour."""


def stubble_area(rel: np.ndarray, sag: float) -> np.ndarray:
    """Which points (``rel``: (N, 3) from the head centre) stubble colours: the jaw and chin,
    bounded below so the neck keeps its skin colour (``sag``: the face's lower-third drop)."""
    return (rel[:, 2] < -0.03 - sag) & (rel[:, 2] > -0.135 - sag) & (rel[:, 1] < 0.02)


def hat_edge(headwear: str, rel_y: np.ndarray) -> np.ndarray:
    """Height (metres above the head centre) of the lower edge of a hat of kind ``headwear`` at
    depth ``rel_y`` from the head centre (negative in front): ``HAT_EDGE`` at the face, falling
    to ``HAT_BACK`` behind. A head without a hat gets the front height everywhere."""
    back = 0.5 + 0.5 * np.tanh(np.asarray(rel_y, np.float32) / 0.04)
    return (HAT_EDGE + (HAT_BACK.get(headwear, HAT_EDGE) - HAT_EDGE) * back).astype(np.float32)


__all__ = ["LANDMARK_PARTS", "MATERIALS", "MATERIAL_OF", "PART_NAMES", "AvatarField", "proportions"]


@dataclass(frozen=True)
class Proportions:
    """Continuous measurements derived from attributes plus a seed's small jitter (metres)."""

    head_center: np.ndarray
    head_radii: np.ndarray
    jaw_half: np.ndarray
    chin_radius: float
    nose_scale: float
    ear_scale: float
    eye_radius: float
    torso_radii: np.ndarray
    neck_radius: float
    hair_gain: float
    sag: float
    brow_ridge: float
    """How far the brow ridge stands out (masculine faces have one)."""
    lip_scale: float
    brow_thickness: float
    brow_arch: float


def proportions(attrs: AvatarAttributes, seed: int = 0) -> Proportions:
    """Measurements for ``attrs``; ``seed`` jitters them by a few percent so no two avatars are equal."""
    rng = np.random.default_rng(np.uint64(seed) + np.uint64(7919))
    jit = lambda s: float(1.0 + rng.uniform(-s, s))  # noqa: E731
    fem = attrs.presentation == "feminine"
    radii = np.array([0.075, 0.092, 0.112]) * (0.96 if fem else 1.0)
    radii *= {
        "oval": (1.0, 1.0, 1.0),
        "round": (1.13, 1.02, 0.92),
        "long": (0.88, 0.98, 1.12),
        "square": (1.08, 1.0, 0.97),
    }[attrs.head_shape]
    radii *= [jit(0.04), jit(0.03), jit(0.03)]
    age_scale = {"young": 0.95, "adult": 1.0, "elderly": 1.0}[attrs.age]
    jaw_w = {"soft": 0.050, "strong": 0.066}[attrs.jaw] * (1.12 if attrs.head_shape == "square" else 1.0)
    jaw_w *= 0.86 if fem else 1.0
    return Proportions(
        head_center=np.array([0.0, 0.0, 0.10]),
        head_radii=radii * age_scale,
        jaw_half=np.array([jaw_w * jit(0.05), 0.055, (0.035 if attrs.jaw == "soft" else 0.04) * (0.92 if fem else 1.0)]),
        chin_radius=(0.022 if attrs.jaw == "soft" else 0.026) * (0.85 if fem else 1.0),
        nose_scale={"young": 0.85, "adult": 1.0, "elderly": 1.2}[attrs.age] * jit(0.1) * (0.88 if fem else 1.0),
        ear_scale={"young": 0.9, "adult": 1.0, "elderly": 1.25}[attrs.age] * jit(0.08) * (0.92 if fem else 1.0),
        eye_radius={"young": 0.0155, "adult": 0.014, "elderly": 0.013}[attrs.age],
        torso_radii=np.array([0.175 if fem else 0.20, 0.10 if fem else 0.105, 0.15]) * [jit(0.05), jit(0.05), 1.0],
        neck_radius=0.044 if fem else 0.052,
        hair_gain=jit(0.15),
        sag={"young": 0.0, "adult": 0.0, "elderly": 0.008}[attrs.age],
        brow_ridge=0.0 if fem else 0.004,
        lip_scale=(1.25 if fem else 1.0) * ({"young": 1.05, "adult": 1.0, "elderly": 0.85}[attrs.age]),
        brow_thickness=0.0028 if fem else 0.0042,
        brow_arch=0.006 if fem else 0.002,
    )  # fmt: skip


class AvatarField(Field):
    """A head-and-shoulders avatar as a signed distance field with albedo, parts and landmarks.

    World space: metres, Z up, the face looking towards -Y, the bust's flat base at
    z = -HALF_EXTENT + 0.01. Evaluation is vectorised numpy; a few µs per point.

    Example:
        >>> f = AvatarField(AvatarAttributes(hair_style="bob"), seed=3)
        >>> f.value(np.zeros((1, 3), np.float32))[0] < 0   # the head centre is inside
        True
        >>> sorted(f.parts(np.zeros((1, 3), np.float32)))[:3]
        ['brows', 'cloth', 'eyes']
    """

    kind = "sdf"
    part_names = MATERIALS

    def __init__(self, attrs: AvatarAttributes, seed: int = 0) -> None:
        self.attrs = attrs
        self.seed = seed
        self.p = proportions(attrs, seed)
        H, R = self.p.head_center, self.p.head_radii
        # Eyeball centres (left +X, right -X): the geometry and the iris colouring must agree.
        self.eye_centres = [H + [s * 0.031, -R[1] + 0.0105, 0.02] for s in (1, -1)]
        self.bbox_min = np.full(3, -HALF_EXTENT, np.float32)
        self.bbox_max = np.full(3, HALF_EXTENT, np.float32)
        # Features that sit on the face (lips, brows, moustache) follow its front surface.
        self.brow_y = [self._front_y(s * 0.032, 0.047) for s in (1, -1)]
        self.brow_y = [y - self.p.brow_ridge for y in self.brow_y]  # brows ride on the ridge
        self.mouth_y = self._front_y(0.0, -0.052 - self.p.sag)

    # -- geometry -------------------------------------------------------------------------
    def _skull(self, x: np.ndarray, ridge: bool = True) -> np.ndarray:
        """The head without eye sockets or neck: skull, jaw, chin, cheeks, brow ridge, nose, ears."""
        a, P = self.attrs, self.p
        H, R = P.head_center, P.head_radii
        head = sdf.ellipsoid(x, H, R)
        jaw = sdf.round_box(x, H + [0, -0.018, -0.068 - P.sag], P.jaw_half, 0.03)
        head = sdf.smin(head, jaw, 0.03)
        head = sdf.smin(head, sdf.sphere(x, H + [0, -0.068, -0.098 - P.sag], P.chin_radius), 0.02)
        if a.age == "young":  # full cheeks
            for s in (-1, 1):
                head = sdf.smin(head, sdf.sphere(x, H + [s * 0.04, -0.058, -0.035], 0.03), 0.02)
        if a.presentation == "feminine":  # high cheekbones
            for s in (-1, 1):
                head = sdf.smin(
                    head, sdf.ellipsoid(x, H + [s * 0.045, -0.062, -0.01], [0.018, 0.014, 0.012]), 0.015
                )
        if ridge and P.brow_ridge > 0:  # a bar along the brows, standing out of the forehead
            r = 0.008
            for s, by in zip((1, -1), self.brow_y, strict=True):
                bar = sdf.capsule(
                    x, [s * 0.012, by + r + 0.004, H[2] + 0.04], [s * 0.05, by + r + 0.012, H[2] + 0.04], r
                )
                head = sdf.smin(head, bar - P.brow_ridge, 0.012)
        ns = P.nose_scale
        tip = H + [0, -R[1] - 0.006 * ns, -0.02 - P.sag]
        bridge = sdf.capsule(x, H + [0, -R[1] + 0.004, 0.02], tip + [0, 0.004, 0.004], 0.007 * ns)
        nose = sdf.smin(bridge, sdf.sphere(x, tip, 0.009 * ns), 0.008)
        for s in (-1, 1):  # nostril wings
            nose = sdf.smin(nose, sdf.sphere(x, tip + [s * 0.009 * ns, 0.007, -0.005], 0.0065 * ns), 0.005)
        for s in (-1, 1):  # nostrils
            nose = sdf.subtract(
                nose, sdf.sphere(x, tip + [s * 0.0055 * ns, 0.001, -0.0115 * ns], 0.0032 * ns)
            )
        head = sdf.smin(head, nose, 0.01)
        es = P.ear_scale
        for s in (-1, 1):
            centre = H + [s * (R[0] - 0.002), 0.008, 0.0]
            ear = sdf.ellipsoid(x, centre, [0.011, 0.018 * es, 0.03 * es])
            ear = sdf.subtract(
                ear, sdf.ellipsoid(x, centre + [s * 0.009, -0.002, 0.0], [0.006, 0.011 * es, 0.02 * es])
            )
            head = sdf.smin(head, ear, 0.006)
        return head

    def _front_y(self, x0: float, z0: float) -> float:
        """Y of the skull's front surface at (x0, z0) (the face looks towards -Y)."""
        H = self.p.head_center
        ys = np.linspace(H[1] - 0.2, H[1], 801, dtype=np.float32)
        pts = np.stack([np.full_like(ys, x0), ys, np.full_like(ys, H[2] + z0)], 1)
        inside = np.nonzero(self._skull(pts, ridge=False) < 0)[0]
        return float(ys[inside[0]]) if len(inside) else float(H[1] - self.p.head_radii[1])

    def _hair(self, x: np.ndarray, rel: np.ndarray) -> tuple[np.ndarray | None, float]:
        """The hair's SDF for its style (None when bald) and its shell thickness."""
        P, style = self.p, self.attrs.hair_style
        H, R = P.head_center, P.head_radii
        thick = {"bald": 0.0, "buzz": 0.004, "short": 0.013, "bob": 0.017, "long": 0.016, "bun": 0.011,
                 "ponytail": 0.010, "curly": 0.03}[style] * P.hair_gain  # fmt: skip
        if style == "bald":
            return None, 0.0
        back = 0.5 + 0.5 * np.tanh(rel[:, 1] / 0.04)  # 0 at the face, 1 at the back
        # cropped styles show the forehead and brows; bobs and long hair keep a fringe
        front = {"buzz": 0.072, "short": 0.068, "curly": 0.062, "bun": 0.066, "ponytail": 0.066}.get(
            style, 0.05
        )
        hairline = front * (1 - back) - 0.055 * back
        shell = sdf.ellipsoid(x, H + [0, 0.004, 0.004], R + thick)
        region = hairline - rel[:, 2]
        if style in ("bob", "long", "curly"):
            # sides and back come down to the jaw (bob, curly) or further (long)
            low = {"bob": -0.075, "long": -0.09, "curly": -0.05}[style]
            sides = np.maximum(low - rel[:, 2], -0.035 - rel[:, 1])
            region = np.minimum(region, sides)
        hair = sdf.intersect(shell, region)
        if style == "curly":
            hair = hair + 0.005 * np.sin(90 * x[:, 0]) * np.sin(90 * x[:, 1]) * np.sin(90 * x[:, 2])
        elif style != "buzz":
            # Locks: rounded ridges running from the crown down, 26 around the head (seen from
            # above they are spokes, which the XY plane of a tri-plane holds well).
            phi = np.arctan2(rel[:, 0], rel[:, 1])
            hair = hair + 0.0022 * (np.abs(np.sin(13 * phi)) - 0.6)
        if style == "long":
            curtain = sdf.round_box(x, H + [0, 0.05, -0.17], [R[0] + 0.01, 0.04, 0.15], 0.03)
            curtain = curtain + 0.002 * (np.abs(np.sin(160 * x[:, 0])) - 0.6)
            hair = sdf.smin(hair, curtain, 0.03)
        elif style == "bun":
            hair = sdf.smin(hair, sdf.sphere(x, H + [0, 0.055, R[2] - 0.01], 0.04), 0.015)
        elif style == "ponytail":
            tail = sdf.capsule(x, H + [0, R[1] + 0.01, 0.02], H + [0, R[1] + 0.035, -0.14], 0.024)
            hair = sdf.smin(hair, tail, 0.02)
        return hair, thick

    def parts(self, points: np.ndarray) -> dict[str, np.ndarray]:
        """Signed distance of each part present at ``points`` (N, 3) -> {part name: (N,) float32}.

        Names come from ``PART_NAMES``; parts the attributes leave out (a bald head's hair,
        glasses of "none") are absent. The avatar's SDF is the minimum over parts.
        """
        x = np.asarray(points, np.float32).reshape(-1, 3)
        a, P = self.attrs, self.p
        H, R = P.head_center, P.head_radii
        rel = x - H
        parts: dict[str, np.ndarray] = {}

        # 1. Skin: the skull, eye sockets with lids, the neck.
        head = self._skull(x)
        for c in self.eye_centres:
            head = sdf.subtract(head, sdf.sphere(x, c + [0, -0.002, 0], P.eye_radius + 0.003))
            # lids: caps over the eyeball's top and bottom, leaving the iris's band open
            ball = sdf.sphere(x, c, P.eye_radius + 0.0016)
            upper = sdf.intersect(ball, (c[2] + 0.3 * P.eye_radius) - x[:, 2])
            lower = sdf.intersect(ball, x[:, 2] - (c[2] - 0.6 * P.eye_radius))
            head = np.minimum(head, np.minimum(upper, lower))
        neck = sdf.capsule(x, [0, 0.012, -0.17], [0, 0.006, 0.02], P.neck_radius)
        parts["skin"] = sdf.smin(head, neck, 0.025)

        # 2. Lips: upper and lower, parted by a mouth line; brows above the eyes.
        my, mz = self.mouth_y, H[2] - 0.052 - P.sag
        ls = P.lip_scale
        upper = sdf.ellipsoid(x, [0, my + 0.0015, mz + 0.0042 * ls], [0.022, 0.0065, 0.0042 * ls])
        lower = sdf.ellipsoid(x, [0, my + 0.002, mz - 0.0048 * ls], [0.020, 0.0065, 0.0050 * ls])
        lips = np.minimum(upper, lower)
        parts["lips"] = sdf.subtract(
            lips, sdf.round_box(x, [0, my - 0.004, mz], [0.024, 0.008, 0.0007], 0.0005)
        )
        brows = []
        for s, by in zip((1, -1), self.brow_y, strict=True):
            inner = np.array([s * 0.016, by + 0.006, H[2] + 0.043])
            peak = np.array([s * 0.034, by + 0.001, H[2] + 0.047 + P.brow_arch])
            outer = np.array([s * 0.050, by + 0.010, H[2] + 0.044])
            brows.append(
                np.minimum(
                    sdf.capsule(x, inner, peak, P.brow_thickness),
                    sdf.capsule(x, peak, outer, 0.8 * P.brow_thickness),
                )
            )
        parts["brows"] = np.minimum(*brows)
        parts["eyes"] = np.minimum(*(sdf.sphere(x, c, P.eye_radius) for c in self.eye_centres))

        # 3. Torso and clothing.
        floor = -HALF_EXTENT + 0.01
        TR = P.torso_radii
        torso = sdf.ellipsoid(x, [0, 0.012, -0.3], TR)
        if a.clothing == "hoodie":
            torso = sdf.ellipsoid(x, [0, 0.012, -0.3], TR + 0.008)
            hood = sdf.ellipsoid(x, [0, 0.075, -0.13], [0.1, 0.055, 0.05])
            torso = sdf.smin(torso, hood, 0.03)
        elif a.clothing == "turtleneck":
            torso = sdf.smin(torso, sdf.cylinder_z(x, [0, 0.012], P.neck_radius + 0.01, -0.2, -0.06), 0.02)
        elif a.clothing == "collared_shirt":
            collar = sdf.subtract(
                sdf.cylinder_z(x, [0, 0.012], P.neck_radius + 0.014, -0.19, -0.115),
                sdf.round_box(x, [0, -0.07, -0.13], [0.022, 0.03, 0.07]),
            )
            torso = sdf.smin(torso, collar, 0.01)
        parts["cloth"] = sdf.intersect(torso, floor - x[:, 2])

        # 4. Hair, by style.
        hair, thick = self._hair(x, rel)
        if hair is not None:
            parts["hair"] = hair

        # 5. Facial hair.
        if a.beard == "goatee":
            parts["beard"] = sdf.ellipsoid(x, H + [0, -0.078, -0.1 - P.sag], [0.022, 0.02, 0.032])
        elif a.beard == "full":
            shell = sdf.round_box(
                x, H + [0, -0.022, -0.075 - P.sag], P.jaw_half + [0.016, 0.016, 0.02], 0.035
            )
            beard = sdf.intersect(shell, np.maximum(rel[:, 2] + 0.035, rel[:, 1] - 0.03))
            # keep the lips clear, and give the beard a coarse texture
            beard = sdf.subtract(beard, sdf.ellipsoid(x, [0, my - 0.01, mz], [0.02, 0.03, 0.011]))
            parts["beard"] = beard + 0.0015 * np.sin(220 * x[:, 0]) * np.sin(180 * x[:, 2])
        if a.moustache == "moustache":
            y = my - 0.001
            parts["moustache"] = np.minimum(
                sdf.capsule(x, [-0.002, y, mz + 0.011], [-0.024, y + 0.006, mz + 0.004], 0.0065),
                sdf.capsule(x, [0.002, y, mz + 0.011], [0.024, y + 0.006, mz + 0.004], 0.0065),
            )

        # 6. Glasses: rims in front of the eyes, a bridge and temples back to the ears.
        if a.glasses != "none":
            y = -R[1] - 0.012
            if a.glasses == "round":
                rims = [sdf.torus_y(x, H + [s * 0.032, y, 0.02], 0.019, 0.0035) for s in (-1, 1)]
            else:
                rims = [
                    sdf.subtract(
                        sdf.round_box(x, H + [s * 0.032, y, 0.02], [0.023, 0.0035, 0.017], 0.003),
                        sdf.round_box(x, H + [s * 0.032, y, 0.02], [0.017, 0.01, 0.011], 0.002),
                    )
                    for s in (-1, 1)
                ]
            g = np.minimum(rims[0], rims[1])
            g = np.minimum(g, sdf.capsule(x, H + [-0.013, y, 0.026], H + [0.013, y, 0.026], 0.003))
            for s in (-1, 1):
                g = np.minimum(
                    g, sdf.capsule(x, H + [s * 0.052, y, 0.024], H + [s * (R[0] + 0.004), 0.0, 0.026], 0.003)
                )
            parts["glasses"] = g

        # 7. Headwear: hats sit on top of the hair, so their size follows its thickness; the
        # lower edge runs from above the brows at the front to HAT_BACK behind.
        edge = hat_edge(a.headwear, rel[:, 1])
        if a.headwear == "cap":
            crown = sdf.intersect(sdf.ellipsoid(x, H + [0, 0.004, 0.006], R + thick + 0.01), edge - rel[:, 2])
            brim = sdf.intersect(
                sdf.ellipsoid(x, H + [0, -R[1] - 0.015, HAT_EDGE + 0.007], [0.07, 0.06, 0.006]),
                rel[:, 1] + R[1] * 0.6,
            )
            parts["hat"] = np.minimum(crown, brim)
        elif a.headwear == "beanie":
            crown = sdf.intersect(
                sdf.ellipsoid(x, H + [0, 0.004, 0.012], R + thick + 0.014), edge - rel[:, 2]
            )
            cuff = sdf.intersect(
                sdf.ellipsoid(x, H + [0, 0.004, 0.0], R + thick + 0.022),
                np.abs(rel[:, 2] - (edge + 0.015)) - 0.015,
            )
            parts["hat"] = np.minimum(crown, cuff)
        return {n: parts[n].astype(np.float32) for n in PART_NAMES if n in parts}

    @cached_property
    def _landmarks(self) -> dict[str, np.ndarray]:
        P = self.p
        H, R = P.head_center, P.head_radii
        mz = H[2] - 0.052 - P.sag
        # the chin: the front-most skin point below the mouth, found along the face's midline
        chin_z = H[2] - 0.098 - P.sag - 0.6 * P.chin_radius
        chin = np.array([0.0, self._front_y(0.0, chin_z - H[2]) + 0.003, chin_z])
        # the top of the skull: bisect down the Z axis
        zs = np.linspace(H[2] + 0.2, H[2], 801, dtype=np.float32)
        top = np.nonzero(self._skull(np.stack([np.zeros_like(zs), np.zeros_like(zs) + H[1], zs], 1)) < 0)[0]
        head_top = np.array([0.0, H[1], float(zs[top[0]]) - 0.003])
        out = {
            "eye_l": np.array(self.eye_centres[0]),
            "eye_r": np.array(self.eye_centres[1]),
            "mouth_l": np.array([0.019, self.mouth_y + 0.004, mz]),
            "mouth_r": np.array([-0.019, self.mouth_y + 0.004, mz]),
            "chin": chin,
            "jaw_l": H + np.array([R[0] - 0.022, 0.0, -0.055 - P.sag]),
            "jaw_r": H + np.array([-(R[0] - 0.022), 0.0, -0.055 - P.sag]),
            "neck_base": np.array([0.0, 0.011, -0.15]),
            "head_top": head_top,
        }
        return {k: v.astype(np.float32) for k, v in out.items()}

    def landmarks(self) -> dict[str, np.ndarray]:
        """Named points (metres, world space) -> {name: (3,) float32}; ``LANDMARK_PARTS`` says
        which part each lies on or in (eye centres in the eyes, mouth corners on the lips, ...)."""
        return {k: v.copy() for k, v in self._landmarks.items()}

    def value(self, points: np.ndarray) -> np.ndarray:
        """Signed distance in metres (negative inside) at points (N, 3) -> (N,) float32."""
        x = np.asarray(points, np.float32).reshape(-1, 3)
        if len(x) == 0:
            return np.zeros(0, np.float32)
        return np.min(np.stack(list(self.parts(x).values())), axis=0).astype(np.float32)

    def nearest_part(self, points: np.ndarray) -> np.ndarray:
        """Index into ``PART_NAMES`` of the part nearest each point (N, 3) -> (N,) int64."""
        x = np.asarray(points, np.float32).reshape(-1, 3)
        parts = self.parts(x)
        names = list(parts)
        nearest = np.argmin(np.stack([parts[n] for n in names]), axis=0)
        return np.array([PART_NAMES.index(n) for n in names], np.int64)[nearest]

    def part_labels(self, points: np.ndarray) -> np.ndarray:
        """Index into ``MATERIALS`` (this field's ``part_names``) of the material at each point."""
        lut = np.array(material_lut(), np.int64)
        return lut[self.nearest_part(points)]

    # -- colour ---------------------------------------------------------------------------
    def albedo(self, points: np.ndarray) -> np.ndarray:
        """RGB in [0, 1] of the nearest part at points (N, 3) -> (N, 3) float32."""
        x = np.asarray(points, np.float32).reshape(-1, 3)
        if len(x) == 0:
            return np.zeros((0, 3), np.float32)
        a, P = self.attrs, self.p
        rel = x - P.head_center
        part = self.nearest_part(x)
        rng = np.random.default_rng(self.seed + 104729)
        tint = lambda c: np.clip(np.asarray(c) * (1 + rng.uniform(-0.04, 0.04, 3)), 0, 1)  # noqa: E731
        colours = part_colours(a, tint)
        skin, hair = colours["skin"], colours["hair"]
        rgb = np.zeros((len(x), 3), np.float32)
        for i, n in enumerate(PART_NAMES):
            rgb[part == i] = colours[n]

        is_skin = part == PART_NAMES.index("skin")
        if a.beard == "stubble":
            rgb[is_skin & stubble_area(rel, P.sag)] = (1 - STUBBLE_SHARE) * skin + STUBBLE_SHARE * hair
        if a.age == "elderly":
            forehead = (rel[:, 2] > 0.058) & (rel[:, 2] < 0.085) & (rel[:, 1] < -0.04)
            lines = forehead & (np.sin(rel[:, 2] * 2 * np.pi / 0.008) > 0.6)
            rgb[is_skin & lines] = 0.8 * skin
        if a.clothing == "tshirt":  # round neckline shows skin
            neckline = sdf.length(x - np.array([0, -0.05, -0.15])) < 0.045
            rgb[(part == PART_NAMES.index("cloth")) & neckline] = skin
        # Iris and pupil: the front cap of each eyeball.
        is_eye = part == PART_NAMES.index("eyes")
        for c in self.eye_centres:
            d = x - c
            front = -d[:, 1] / np.maximum(sdf.length(d), 1e-9)
            rgb[is_eye & (front > 0.80)] = IRIS[a.eye_color]
            rgb[is_eye & (front > 0.95)] = PUPIL
        return rgb
