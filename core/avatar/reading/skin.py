"""Skin: the cheek colour (every other region is measured against it), exposure, skin width, backdrop."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.avatar.reading.align import CANON_PX, CANON_U, CANON_V, AlignedFace
from core.avatar.reading.colour import lab_to_rgb, median_colour, nearest_colour, rgb_to_lab
from core.avatar.reading.readings import THRESHOLDS, Reading
from core.avatar.vocab.palettes import SKIN


@dataclass(frozen=True)
class SkinFeatures:
    """What the skin reader measured."""

    cheek_lightness: float
    """L* of the brighter cheek (NaN when no cheek is visible)."""
    exposure_gain: float
    """Display-RGB gain applied before matching the palette (1 = none)."""
    sclera_lightness: float
    """L* of the whites of the eyes the gain was taken from (NaN when unseen)."""


# Upper and lower lid contours of each eye, in order around the eye.
EYE_OUTLINE_LEFT = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
EYE_OUTLINE_RIGHT = (362, 398, 384, 385, 386, 387, 388, 466, 263, 249, 390, 373, 374, 380, 381, 382)


def sclera_gain(af: AlignedFace) -> tuple[float, float]:
    """Exposure correction from the whites of the eyes, which are near white in every face.

    The brighter half of the pixels inside both eye outlines (iris excluded) is taken as
    the sclera; its display lightness against an ideal 0.94 gives the light falling on
    the face. Clipped, and only half applied, because lids shade real eyes.

    Returns:
        (gain, sclera lightness L*); (1, nan) when too few eye pixels are visible.
    """
    u, v = af.uv()
    from PIL import Image, ImageDraw

    h, w = af.valid.shape
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    p = af.points
    for outline in (EYE_OUTLINE_LEFT, EYE_OUTLINE_RIGHT):
        pts = [((p[i, 0] - CANON_U[0]) * CANON_PX, (p[i, 1] - CANON_V[0]) * CANON_PX) for i in outline]
        draw.polygon(pts, fill=255)
    inside = (np.asarray(img) > 0) & af.valid
    iris_r = np.linalg.norm(p[468] - p[469])
    for c in (p[468], p[473]):
        inside &= np.hypot(u - c[0], v - c[1]) > 1.1 * iris_r
    px = af.lab[inside]
    if len(px) < 6:
        return 1.0, float("nan")
    bright = np.sort(px[:, 0])[len(px) // 2 :]
    sclera_l = float(np.median(bright))
    # L* -> display value (inverse of the L* curve and the sRGB curve are close enough here).
    grey = ((sclera_l + 16) / 116) ** 3
    grey = grey ** (1 / 2.2)
    gain = float(np.clip(0.94 / max(grey, 1e-3), 0.75, 1.4))
    return float(np.sqrt(gain)), sclera_l


def read_skin(af: AlignedFace) -> tuple[np.ndarray, dict[str, Reading], SkinFeatures]:
    """Skin colour from both cheeks (the brighter one: the other may be in shadow).

    Returns:
        (cheek colour in Lab, NaN when no cheek is visible; the skin_tone reading; features).
    """
    p = af.points
    cheeks = []
    for i in (50, 280):  # cheek centres below the eyes, beside the nose
        px = af.disk(p[i], 0.05)
        if len(px) >= 5:
            cheeks.append(median_colour(px))
    if not cheeks:
        return np.full(3, np.nan), {}, SkinFeatures(float("nan"), 1.0, float("nan"))
    skin = max(cheeks, key=lambda lab: lab[0])
    gain, sclera_l = sclera_gain(af)
    # Apply the exposure gain in display RGB, then compare with the palette.
    corrected = rgb_to_lab(np.clip(lab_to_rgb(skin) * gain, 0.0, 1.0))
    value, conf, _ = nearest_colour(corrected, SKIN, weights=(1.0, 0.5, 0.5), temperature=4.0)
    evidence = f"cheek L*={skin[0]:.1f} a*={skin[1]:.1f} b*={skin[2]:.1f}, exposure x{gain:.2f}"
    features = SkinFeatures(float(skin[0]), gain, sclera_l)
    return skin, {"skin_tone": Reading(value, conf, evidence)}, features


def backdrop_colours(af: AlignedFace) -> list[np.ndarray]:
    """Backdrop colours left of, right of and above the head (wherever the photo has pixels)."""
    out = []
    for u0, u1, v0, v1 in ((CANON_U[0], -0.95, CANON_V[0], 0.6), (0.95, CANON_U[1], CANON_V[0], 0.6),
                           (-0.95, 0.95, CANON_V[0], -0.7)):  # fmt: skip
        px = af.box(u0, u1, v0, v1)
        if len(px) >= 20:
            out.append(median_colour(px))
    return out


def skin_width(af: AlignedFace, skin: np.ndarray, v0: float, v1: float) -> float:
    """Median width (face lengths) of the skin-coloured span of the rows in [v0, v1).

    A pixel counts as skin within a colour distance that weighs lightness half (shading);
    each row's span runs from its leftmost to its rightmost run of 3 skin pixels within
    0.8 face lengths of the centre line, so lips, eyes and noise do not break it.
    """
    u, v = af.uv()
    d = np.sqrt((((af.lab - skin) * [0.5, 1.0, 1.0]) ** 2).sum(-1))
    mask = af.valid & (d < THRESHOLDS.skin_span_de) & (np.abs(u) < 0.8)
    runs = mask[:, 2:] & mask[:, 1:-1] & mask[:, :-2]
    widths = []
    for i in np.nonzero((v[:, 0] >= v0) & (v[:, 0] < v1))[0]:
        idx = np.nonzero(runs[i])[0]
        if len(idx) >= 2:
            widths.append((idx[-1] - idx[0] + 3) / CANON_PX)
    return float(np.median(widths)) if widths else float("nan")
