"""Hair: presence, colour and coarse length from bands above and beside the face."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.avatar.reading import face as fm
from core.avatar.reading.align import CANON_PX, AlignedFace
from core.avatar.reading.colour import delta_e, delta_e_shaded, median_colour, nearest_colour
from core.avatar.reading.readings import THRESHOLDS, Reading, confidence
from core.avatar.vocab.palettes import HAIR


@dataclass(frozen=True)
class HairFeatures:
    """What the hair reader measured; widths in face lengths, both sides together (NaN = unseen)."""

    top_fraction: float = float("nan")
    """Fraction of hair-coloured pixels in the band above the forehead."""
    beside_ears: float = float("nan")
    beside_jaw: float = float("nan")
    below_chin: float = float("nan")


def read_hair(
    af: AlignedFace, skin: np.ndarray, bg: list[np.ndarray]
) -> tuple[dict[str, Reading], np.ndarray | None, HairFeatures]:
    """Hair presence, colour and coarse length from bands above and beside the face.

    Returns the readings, the measured hair colour (Lab (3,), None when bald or unseen) and the
    features.
    """

    def not_bg(px: np.ndarray) -> np.ndarray:
        if not bg:
            return np.ones(len(px), bool)
        return np.min([delta_e(px, b) for b in bg], axis=0) > t.hair_bg_de

    # 1. The band just above the forehead: hair, skin (bald) or backdrop (bald, short crop).
    top = af.box(-0.22, 0.22, -0.28, -0.06)
    if len(top) < 20:
        return {}, None, HairFeatures()
    t = THRESHOLDS
    is_hair = not_bg(top) & (delta_e_shaded(top, skin) > t.hair_skin_de)
    frac = float(is_hair.mean())
    if frac < t.hair_bald_max:
        conf = confidence(frac, t.hair_bald_max, 0.08)
        return (
            {"hair_style": Reading("bald", conf, f"hair above forehead {frac:.0%}")},
            None,
            HairFeatures(frac),
        )
    colour = median_colour(top[is_hair])
    value, cconf, _ = nearest_colour(colour, HAIR, weights=(0.6, 1.0, 1.0), temperature=6.0)
    out = {
        "hair_color": Reading(value, cconf, f"hair L*={colour[0]:.1f} a*={colour[1]:.1f} b*={colour[2]:.1f}"),
    }

    # 2. Length: how wide a band of that colour runs beside the face at ear, jaw and shoulder
    # height (in face lengths, both sides together). Pixels must be nearer the hair colour than
    # the skin colour so blonde hair on light skin is not counted as skin, nor the reverse.
    u, v = af.uv()
    lab = af.lab
    d_hair = delta_e(lab, colour)
    hairlike = (
        af.valid & (d_hair < t.hair_match_de) & (delta_e_shaded(lab, colour) < delta_e_shaded(lab, skin))
    )
    if bg:
        hairlike &= np.min([delta_e(lab, b) for b in bg], axis=0) > t.hair_bg_de
    # Beside the face means outside the jaw (where a beard of the same colour would be).
    p = af.points
    jaw_half = (p[fm.JAW_RIGHT, 0] - p[fm.JAW_LEFT, 0]) / 2
    cheek_half = (p[fm.FACE_RIGHT, 0] - p[fm.FACE_LEFT, 0]) / 2

    def width(v0: float, v1: float, inner: float) -> float:
        rows = (v >= v0) & (v < v1)
        n_rows = max(int(rows[:, 0].sum()), 1)
        beside = (np.abs(u) > inner) & (np.abs(u) < inner + 0.4)
        return float((hairlike & rows & beside).sum()) / n_rows / CANON_PX

    ear = width(0.25, 0.45, cheek_half)
    jaw = width(0.6, 0.85, jaw_half + 0.04)
    below = width(1.05, 1.35, 0.3)
    # Coarse: "short" stands for every style that keeps the sides short (buzz, short, bun,
    # ponytail), "bob" for hair down to the jaw (bob, curls), "long" for hair past the chin.
    not_bald = confidence(frac, t.hair_bald_max, 0.08)
    if below >= t.hair_long_w and max(ear, jaw) >= t.hair_side_min:
        style, conf = "long", confidence(below, t.hair_long_w, 0.08)
    elif ear >= t.hair_bob_ear_w or jaw >= t.hair_bob_jaw_w:
        style = "bob"
        conf = min(
            max(confidence(ear, t.hair_bob_ear_w, 0.08), confidence(jaw, t.hair_bob_jaw_w, 0.05)),
            confidence(below, t.hair_long_w, 0.08),
        )
    else:
        style = "short"
        conf = min(
            confidence(ear, t.hair_bob_ear_w, 0.08),
            confidence(jaw, t.hair_bob_jaw_w, 0.03),
            confidence(below, t.hair_long_w, 0.08),
        )
    conf = min(conf, not_bald)
    out["hair_style"] = Reading(
        style, conf, f"hair width beside ears {ear:.2f}, jaw {jaw:.2f}, below chin {below:.2f}"
    )
    return out, colour, HairFeatures(frac, ear, jaw, below)
