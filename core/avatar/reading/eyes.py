"""The eyes: glasses from frame pixels around them, eye colour from the irises when large enough."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.avatar.reading import face as fm
from core.avatar.reading.align import AlignedFace
from core.avatar.reading.colour import delta_e, median_colour, nearest_colour
from core.avatar.reading.readings import THRESHOLDS, Reading, confidence, ramp
from core.avatar.vocab.palettes import IRIS


@dataclass(frozen=True)
class EyeFeatures:
    """What the eye reader measured."""

    rim: float
    """Fraction of frame-coloured pixels under the eyes (NaN when unseen)."""
    bridge: float
    """Fraction at the nose bridge."""
    corners: float
    """Fraction at the rims' lower corners (square frames cross them)."""
    iris_px: float
    """Iris radius in the analysed photo's pixels."""


def read_eyes(af: AlignedFace, skin: np.ndarray) -> tuple[dict[str, Reading], EyeFeatures]:
    """Glasses from frame pixels around the eyes; eye colour from the irises when large enough."""
    t = THRESHOLDS
    p = af.points
    out: dict[str, Reading] = {}
    fracs = []
    rim = corners = float("nan")
    corner_fracs = []
    for eye in (fm.EYE_LEFT, fm.EYE_RIGHT):
        c = p[list(eye)].mean(0)
        below = af.box(c[0] - 0.07, c[0] + 0.07, c[1] + 0.05, c[1] + 0.16)
        if len(below):
            fracs.append(float((delta_e(below, skin) > t.glasses_de).mean()))
        for du in (-0.13, 0.13):
            px = af.disk(c + [du, 0.10], 0.025)
            if len(px):
                corner_fracs.append(float((delta_e(px, skin) > t.glasses_de).mean()))
    bridge_px = af.disk(p[fm.NOSE_BRIDGE], 0.03)
    bridge = float((delta_e(bridge_px, skin) > t.glasses_de).mean()) if len(bridge_px) else 0.0
    if fracs:
        rim = float(np.mean(fracs))
        corners = float(np.mean(corner_fracs)) if corner_fracs else 0.0
        score = rim + bridge
        evidence = f"frame pixels under eyes {rim:.0%}, bridge {bridge:.0%}, rim corners {corners:.0%}"
        present = confidence(score, t.glasses_score, 0.3)
        if score >= t.glasses_score:
            # The shape is the weaker cue: square rims cross the corners below each eye.
            square = corners >= t.glasses_square_corners
            conf = min(present, 0.5 + 0.45 * ramp(abs(corners - t.glasses_square_corners), 0, 0.2))
            out["glasses"] = Reading("square" if square else "round", conf, evidence)
        else:
            out["glasses"] = Reading("none", present, evidence)

    # Eye colour: the iris ring between pupil and limbus, skipping highlights and lids.
    iris_r = np.mean([np.linalg.norm(p[468] - p[469]), np.linalg.norm(p[473] - p[474])])
    iris_px = iris_r * af.face_px
    if iris_px >= 3.0:
        u, v = af.uv()
        ring = np.zeros_like(af.valid)
        for c in (p[468], p[473]):
            d = np.hypot(u - c[0], v - c[1])
            ring |= (d <= 0.9 * iris_r) & (d >= 0.4 * iris_r)
        px = af.lab[ring & af.valid]
        px = px[(px[:, 0] > 12) & (px[:, 0] < 85)]
        if len(px) >= 8:
            colour = median_colour(px)
            value, conf, _ = nearest_colour(colour, IRIS, weights=(0.5, 1.0, 1.0), temperature=5.0)
            conf *= ramp(iris_px, 3.0, 5.0)
            out["eye_color"] = Reading(
                value,
                conf,
                f"iris L*={colour[0]:.1f} a*={colour[1]:.1f} b*={colour[2]:.1f}, {iris_px:.1f} px",
            )
    return out, EyeFeatures(rim, bridge, corners, float(iris_px))
