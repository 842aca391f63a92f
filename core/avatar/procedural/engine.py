"""The procedural avatar engine: attributes -> a head-and-shoulders SDF with per-part albedo."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.avatar.procedural import sdf
from core.avatar.vocab.attributes import AvatarAttributes
from core.avatar.vocab.palettes import CLOTH, EYE_WHITE, FRAME, HAIR, IRIS, PUPIL, SKIN
from core.fields.base import Field

HALF_EXTENT = 0.32
"""The avatar lives in the cube [-HALF_EXTENT, HALF_EXTENT]^3 (metres), the bust's base at its floor."""


@dataclass(frozen=True)
class Proportions:
    """Continuous measurements derived from attributes plus a seed's small jitter (metres)."""

    head_center: np.ndarray
    head_radii: np.ndarray
    jaw_half: np.ndarray
    nose_scale: float
    ear_scale: float
    eye_radius: float
    torso_radii: np.ndarray
    hair_gain: float
    sag: float


def proportions(attrs: AvatarAttributes, seed: int = 0) -> Proportions:
    """Measurements for ``attrs``; ``seed`` jitters them by a few percent so no two avatars are equal."""
    rng = np.random.default_rng(np.uint64(seed) + np.uint64(7919))
    jit = lambda s: float(1.0 + rng.uniform(-s, s))  # noqa: E731
    radii = np.array([0.075, 0.092, 0.112])
    radii *= {
        "oval": (1.0, 1.0, 1.0),
        "round": (1.13, 1.02, 0.92),
        "long": (0.88, 0.98, 1.12),
        "square": (1.08, 1.0, 0.97),
    }[attrs.head_shape]
    radii *= [jit(0.04), jit(0.03), jit(0.03)]
    age_scale = {"young": 0.95, "adult": 1.0, "elderly": 1.0}[attrs.age]
    jaw_w = {"soft": 0.050, "strong": 0.066}[attrs.jaw] * (1.12 if attrs.head_shape == "square" else 1.0)
    return Proportions(
        head_center=np.array([0.0, 0.0, 0.10]),
        head_radii=radii * age_scale,
        jaw_half=np.array([jaw_w * jit(0.05), 0.055, 0.035 if attrs.jaw == "soft" else 0.04]),
        nose_scale={"young": 0.85, "adult": 1.0, "elderly": 1.2}[attrs.age] * jit(0.1),
        ear_scale={"young": 0.9, "adult": 1.0, "elderly": 1.25}[attrs.age] * jit(0.08),
        eye_radius={"young": 0.0155, "adult": 0.014, "elderly": 0.013}[attrs.age],
        torso_radii=np.array([0.20, 0.105, 0.15]) * [jit(0.05), jit(0.05), 1.0],
        hair_gain=jit(0.15),
        sag={"young": 0.0, "adult": 0.0, "elderly": 0.008}[attrs.age],
    )


class AvatarField(Field):
    """A head-and-shoulders avatar as a signed distance field with albedo.

    World space: metres, Z up, the face looking towards -Y, the bust's flat base at
    z = -HALF_EXTENT + 0.01. Evaluation is vectorised numpy; ~1 µs per point.

    Example:
        >>> f = AvatarField(AvatarAttributes(hair_style="bob"), seed=3)
        >>> f.value(np.zeros((1, 3), np.float32))[0] < 0   # the head centre is inside
        True
    """

    kind = "sdf"

    def __init__(self, attrs: AvatarAttributes, seed: int = 0) -> None:
        self.attrs = attrs
        self.seed = seed
        self.p = proportions(attrs, seed)
        H, R = self.p.head_center, self.p.head_radii
        # Eyeball centres (left, right): the geometry and the iris colouring must agree.
        self.eye_centres = [H + [s * 0.031, -R[1] + 0.008, 0.02] for s in (-1, 1)]
        self.bbox_min = np.full(3, -HALF_EXTENT, np.float32)
        self.bbox_max = np.full(3, HALF_EXTENT, np.float32)

    # -- geometry -------------------------------------------------------------------------
    def _parts(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Signed distance of each coloured part at points x (N, 3)."""
        a, P = self.attrs, self.p
        H, R = P.head_center, P.head_radii
        rel = x - H
        parts: dict[str, np.ndarray] = {}

        # 1. Skin: skull, jaw, chin, nose, ears, neck blended smoothly.
        head = sdf.ellipsoid(x, H, R)
        jaw = sdf.round_box(x, H + [0, -0.018, -0.068 - P.sag], P.jaw_half, 0.03)
        head = sdf.smin(head, jaw, 0.03)
        chin_r = 0.022 if a.jaw == "soft" else 0.026
        head = sdf.smin(head, sdf.sphere(x, H + [0, -0.068, -0.098 - P.sag], chin_r), 0.02)
        if a.age == "young":  # full cheeks
            for s in (-1, 1):
                head = sdf.smin(head, sdf.sphere(x, H + [s * 0.04, -0.058, -0.035], 0.03), 0.02)
        ns = P.nose_scale
        nose = sdf.ellipsoid(
            x, H + [0, -R[1] - 0.004 * ns, -0.005 - P.sag], [0.013 * ns, 0.018 * ns, 0.028 * ns]
        )
        head = sdf.smin(head, nose, 0.012)
        es = P.ear_scale
        for s in (-1, 1):
            ear = sdf.ellipsoid(x, H + [s * (R[0] - 0.002), 0.008, 0.0], [0.011, 0.018 * es, 0.03 * es])
            head = sdf.smin(head, ear, 0.008)
        # eye sockets: carve, then put the eyeballs back in as their own part
        for s in (-1, 1):
            head = sdf.subtract(
                head, sdf.sphere(x, H + [s * 0.031, -R[1] + 0.006, 0.02], P.eye_radius + 0.003)
            )
        neck = sdf.capsule(x, [0, 0.012, -0.17], [0, 0.006, 0.02], 0.052)
        parts["skin"] = sdf.smin(head, neck, 0.025)
        eyes = np.minimum(
            sdf.sphere(x, self.eye_centres[0], P.eye_radius),
            sdf.sphere(x, self.eye_centres[1], P.eye_radius),
        )
        parts["eyes"] = eyes

        # 2. Torso and clothing.
        floor = -HALF_EXTENT + 0.01
        TR = P.torso_radii
        torso = sdf.ellipsoid(x, [0, 0.012, -0.3], TR)
        if a.clothing == "hoodie":
            torso = sdf.ellipsoid(x, [0, 0.012, -0.3], TR + 0.008)
            hood = sdf.ellipsoid(x, [0, 0.075, -0.13], [0.1, 0.055, 0.05])
            torso = sdf.smin(torso, hood, 0.03)
        elif a.clothing == "turtleneck":
            torso = sdf.smin(torso, sdf.cylinder_z(x, [0, 0.012], 0.062, -0.2, -0.06), 0.02)
        elif a.clothing == "collared_shirt":
            collar = sdf.subtract(
                sdf.cylinder_z(x, [0, 0.012], 0.066, -0.19, -0.115),
                sdf.round_box(x, [0, -0.07, -0.13], [0.022, 0.03, 0.07]),
            )
            torso = sdf.smin(torso, collar, 0.01)
        parts["cloth"] = sdf.intersect(torso, floor - x[:, 2])

        # 3. Hair, by style. A shell over the skull above a hairline that is high at the
        # forehead and low at the nape.
        back = 0.5 + 0.5 * np.tanh(rel[:, 1] / 0.04)  # 0 at the face, 1 at the back
        hairline = 0.05 * (1 - back) - 0.055 * back
        style = a.hair_style
        thick = {"bald": 0.0, "buzz": 0.004, "short": 0.013, "bob": 0.017, "long": 0.016, "bun": 0.011,
                 "ponytail": 0.010, "curly": 0.03}[style] * P.hair_gain  # fmt: skip
        if style != "bald":
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
            elif style == "long":
                curtain = sdf.round_box(x, H + [0, 0.05, -0.17], [R[0] + 0.01, 0.04, 0.15], 0.03)
                hair = sdf.smin(hair, curtain, 0.03)
            elif style == "bun":
                hair = sdf.smin(hair, sdf.sphere(x, H + [0, 0.055, R[2] - 0.01], 0.04), 0.015)
            elif style == "ponytail":
                tail = sdf.capsule(x, H + [0, R[1] + 0.01, 0.02], H + [0, R[1] + 0.035, -0.14], 0.024)
                hair = sdf.smin(hair, tail, 0.02)
            parts["hair"] = hair

        # 4. Facial hair.
        if a.beard == "goatee":
            parts["beard"] = sdf.ellipsoid(x, H + [0, -0.078, -0.1 - P.sag], [0.022, 0.02, 0.032])
        elif a.beard == "full":
            shell = sdf.round_box(
                x, H + [0, -0.022, -0.075 - P.sag], P.jaw_half + [0.016, 0.016, 0.02], 0.035
            )
            parts["beard"] = sdf.intersect(shell, np.maximum(rel[:, 2] + 0.035, rel[:, 1] - 0.03))
        if a.moustache == "moustache":
            parts["moustache"] = sdf.capsule(
                x, H + [-0.021, -R[1] - 0.001, -0.04], H + [0.021, -R[1] - 0.001, -0.04], 0.0075
            )

        # 5. Glasses: rims in front of the eyes, a bridge and temples back to the ears.
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

        # 6. Headwear.
        if a.headwear == "cap":
            # hats sit on top of the hair, so their size follows the hair's thickness
            crown = sdf.intersect(
                sdf.ellipsoid(x, H + [0, 0.004, 0.006], R + thick + 0.01), 0.035 - rel[:, 2]
            )
            brim = sdf.intersect(
                sdf.ellipsoid(x, H + [0, -R[1] - 0.015, 0.045], [0.07, 0.06, 0.006]), rel[:, 1] + R[1] * 0.6
            )
            parts["hat"] = np.minimum(crown, brim)
        elif a.headwear == "beanie":
            crown = sdf.intersect(
                sdf.ellipsoid(x, H + [0, 0.004, 0.012], R + thick + 0.014), 0.012 - rel[:, 2]
            )
            cuff = sdf.intersect(
                sdf.ellipsoid(x, H + [0, 0.004, 0.0], R + thick + 0.022), np.abs(rel[:, 2] - 0.027) - 0.015
            )
            parts["hat"] = np.minimum(crown, cuff)
        return parts

    def value(self, points: np.ndarray) -> np.ndarray:
        """Signed distance in metres (negative inside) at points (N, 3) -> (N,) float32."""
        x = np.asarray(points, np.float32).reshape(-1, 3)
        if len(x) == 0:
            return np.zeros(0, np.float32)
        parts = self._parts(x)
        return np.min(np.stack(list(parts.values())), axis=0).astype(np.float32)

    # -- colour ---------------------------------------------------------------------------
    def albedo(self, points: np.ndarray) -> np.ndarray:
        """RGB in [0, 1] of the nearest part at points (N, 3) -> (N, 3) float32."""
        x = np.asarray(points, np.float32).reshape(-1, 3)
        if len(x) == 0:
            return np.zeros((0, 3), np.float32)
        a, P = self.attrs, self.p
        H = P.head_center
        rel = x - H
        parts = self._parts(x)
        names = list(parts)
        nearest = np.argmin(np.stack([parts[n] for n in names]), axis=0)
        rng = np.random.default_rng(self.seed + 104729)
        tint = lambda c: np.clip(np.asarray(c) * (1 + rng.uniform(-0.04, 0.04, 3)), 0, 1)  # noqa: E731
        skin = tint(SKIN[a.skin_tone])
        if a.age == "elderly":  # paler, greyer skin
            skin = 0.85 * skin + 0.15 * np.mean(skin)
        hair = tint(HAIR[a.hair_color])
        colours = {
            "skin": skin,
            "eyes": EYE_WHITE,
            "cloth": tint(CLOTH[a.clothing_color]),
            "hair": hair,
            "beard": hair,
            "moustache": hair,
            "glasses": FRAME.get(a.glasses, (0, 0, 0)),
            "hat": tint(CLOTH[a.headwear_color]),
        }
        rgb = np.zeros((len(x), 3), np.float32)
        for i, n in enumerate(names):
            rgb[nearest == i] = colours[n]

        is_skin = nearest == names.index("skin")
        # Lips, brows, stubble and wrinkles are colour on the skin part.
        lips = ((rel[:, 0] / 0.024) ** 2 + ((rel[:, 2] + 0.052 + P.sag) / 0.009) ** 2 < 1) & (
            rel[:, 1] < -0.05
        )
        rgb[is_skin & lips] = skin * np.array([0.85, 0.55, 0.55])
        brow_colour = hair if a.hair_style != "bald" else 0.6 * skin
        for s in (-1, 1):
            brow = (
                (np.abs(rel[:, 0] - s * 0.032) < 0.017)
                & (np.abs(rel[:, 2] - 0.047) < 0.005)
                & (rel[:, 1] < -0.05)
            )
            rgb[is_skin & brow] = brow_colour
        if a.beard == "stubble":
            # jaw and chin only: bounded below so the neck keeps its skin colour
            lower = (rel[:, 2] < -0.03 - P.sag) & (rel[:, 2] > -0.135 - P.sag) & (rel[:, 1] < 0.02) & ~lips
            rgb[is_skin & lower] = 0.55 * skin + 0.45 * hair
        if a.age == "elderly":
            forehead = (rel[:, 2] > 0.055) & (rel[:, 2] < 0.085) & (rel[:, 1] < -0.04)
            lines = forehead & (np.sin(rel[:, 2] * 2 * np.pi / 0.008) > 0.6)
            rgb[is_skin & lines] = 0.8 * skin
        if a.clothing == "tshirt":  # round neckline shows skin
            neckline = sdf.length(x - np.array([0, -0.05, -0.15])) < 0.045
            rgb[(nearest == names.index("cloth")) & neckline] = skin
        # Iris and pupil: the front cap of each eyeball.
        is_eye = nearest == names.index("eyes")
        for c in self.eye_centres:
            d = x - c
            front = -d[:, 1] / np.maximum(sdf.length(d), 1e-9)
            rgb[is_eye & (front > 0.80)] = IRIS[a.eye_color]
            rgb[is_eye & (front > 0.95)] = PUPIL
        return rgb
