"""Avatar attributes measured from a face photo: landmark ratios and region colours, each with a confidence."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from core.avatar import face as fm
from core.avatar.attributes import VOCAB
from core.avatar.colour import delta_e, delta_e_shaded, lab_to_rgb, median_colour, nearest_colour, rgb_to_lab
from core.avatar.engine import HAIR, IRIS, SKIN
from core.avatar.face_align import CANON_PX, CANON_U, CANON_V, AlignedFace, align_face
from core.avatar.photo import Photo, load_photo

MIN_CONFIDENCE = 0.5
"""Readings below this confidence are reported but not used: the avatar model samples them."""

# Reference colours are the engine's own palette, so a value read renders as what was seen.
SKIN_REF = SKIN
HAIR_REF = HAIR
IRIS_REF = IRIS
# In a greyscale photo only lightness is left: these hair colours are the ones it can tell.
_GREY_READABLE_HAIR = ("black", "grey", "white")


@dataclass(frozen=True)
class Thresholds:
    """Decision boundaries of the readers.

    Calibrated on engine renders (seeds 3000-3079 of bench/photo_avatar_eval.py, which
    evaluates on other seeds); distances are CIE76 Delta E, widths are in face lengths.
    """

    hair_bald_max: float = 0.12
    """Largest fraction of hair-coloured pixels above the forehead that still reads as bald."""
    hair_bg_de: float = 12.0
    """Pixels at least this far from every backdrop colour can be hair."""
    hair_skin_de: float = 12.0
    """Pixels at least this far from the skin (lightness half-weighted) can be hair."""
    hair_match_de: float = 15.0
    """Pixels within this distance of the measured hair colour count as hair beside the face."""
    hair_long_w: float = 0.1
    """Hair wider than this beside the neck below the chin reads as long."""
    hair_side_min: float = 0.01
    """Long hair must also show beside the face above the chin (else the band is clothing)."""
    hair_bob_ear_w: float = 0.1
    """Hair wider than this beside the cheeks at ear height reads as bob (or curls)."""
    hair_bob_jaw_w: float = 0.03
    """Hair wider than this outside the jaw reads as bob."""
    beard_de: float = 12.0
    """Chin or jaw regions at least this far from the cheek skin hold facial hair."""
    beard_full_t: float = 0.6
    """Facial hair at least this far along the skin -> hair colour line is a full beard, else stubble."""
    moustache_band: float = 0.7
    """Fraction of the most hair-coloured row between nose and mouth from which a moustache is read."""
    glasses_score: float = 0.45
    """Frame-pixel fraction under the eyes plus at the nose bridge above which glasses are read."""
    glasses_square_corners: float = 0.3
    """Frame-pixel fraction at the rims' lower corners above which frames read as square."""
    glasses_de: float = 25.0
    """Pixels this far from the skin around the eyes count as frame."""
    face_wide: float = 0.81
    """Cheek-to-cheek landmark width (per face length) from which a face reads round or square."""
    face_narrow: float = 0.76
    """Width below which a face reads long."""
    square_mouth_w: float = 0.72
    """Skin width at mouth height from which a wide face reads square rather than round."""
    jaw_strong: float = 0.465
    """Nose-tip-to-chin height (per face length) from which a jaw reads strong."""
    skin_span_de: float = 15.0
    """Pixels within this (lightness half-weighted) distance of the cheek colour count as skin."""


THRESHOLDS = Thresholds()


def _conf(x: float, threshold: float, scale: float) -> float:
    """Confidence of a decision made by comparing ``x`` with ``threshold``.

    0.3 on the boundary, 0.95 at ``scale`` or more away from it: a reading within about
    a third of ``scale`` of its boundary stays below ``MIN_CONFIDENCE`` and is not used.
    """
    return 0.3 + 0.65 * _ramp(abs(x - threshold), 0.0, scale)


@dataclass(frozen=True)
class Reading:
    """One attribute read from the photo.

    Attributes:
        value: a value from ``VOCAB[name]``.
        confidence: in [0, 1]; below ``MIN_CONFIDENCE`` the value is not used.
        evidence: the measurement behind it, for people ("cheek L*=64.2").
    """

    value: str
    confidence: float
    evidence: str = ""


@dataclass(frozen=True)
class PhotoReading:
    """Everything read from one photo.

    Attributes:
        readings: attribute name -> Reading, for every attribute the reader measured.
        face_box: (x0, y0, x1, y1) of the face in the original photo's pixels.
        landmarks: (478, 2) float64 landmark positions in the original photo's pixels.
        warnings: things the artist should know (several faces, small face, greyscale, ...).
        unread: attribute names not read from this photo (the model samples them).
    """

    readings: dict[str, Reading]
    face_box: tuple[float, float, float, float]
    landmarks: np.ndarray
    warnings: tuple[str, ...] = ()
    unread: tuple[str, ...] = ()
    features: dict[str, float] = field(default_factory=dict)
    """Raw measurements behind the readings (for calibration and debugging)."""

    def attributes(self, min_confidence: float = MIN_CONFIDENCE) -> dict[str, str]:
        """The confident readings as a partial attribute dict (what the avatar is conditioned on)."""
        return {n: r.value for n, r in self.readings.items() if r.confidence >= min_confidence}

    def to_json(self, min_confidence: float = MIN_CONFIDENCE) -> dict:
        """A JSON-ready summary: used attributes, every reading with its confidence, warnings."""
        return {
            "attributes": self.attributes(min_confidence),
            "read": {
                n: {
                    "value": r.value,
                    "confidence": round(r.confidence, 3),
                    "used": r.confidence >= min_confidence,
                    "evidence": r.evidence,
                }
                for n, r in self.readings.items()
            },
            "not_read": list(self.unread),
            "min_confidence": min_confidence,
            "face_box": [round(v, 1) for v in self.face_box],
            "warnings": list(self.warnings),
        }


def _ramp(x: float, lo: float, hi: float) -> float:
    """0 at ``lo``, 1 at ``hi``, linear between (a soft threshold used for confidences)."""
    return float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))


# -- the readers ------------------------------------------------------------------------------


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


def _shape(af: AlignedFace, skin: np.ndarray, feats: dict[str, float]) -> dict[str, Reading]:
    """head_shape and jaw from landmark ratios and the skin's width (eyes level, face-length units)."""
    t = THRESHOLDS
    p = af.points
    width = float(p[fm.FACE_RIGHT, 0] - p[fm.FACE_LEFT, 0])
    nose_chin = float(p[fm.CHIN, 1] - p[fm.NOSE_TIP, 1])
    mouth_w = skin_width(af, skin, 0.65, 0.75)
    feats |= {"lm_width": width, "lm_nose_chin": nose_chin, "skin_w_mouth": mouth_w}
    if width >= t.face_wide:
        square = not np.isnan(mouth_w) and mouth_w >= t.square_mouth_w
        value = "square" if square else "round"
        conf = min(_conf(width, t.face_wide, 0.06), _conf(mouth_w, t.square_mouth_w, 0.2) if square else 0.6)
    elif width < t.face_narrow:
        value, conf = "long", _conf(width, t.face_narrow, 0.06)
    else:
        value = "oval"
        conf = min(_conf(width, t.face_wide, 0.03), _conf(width, t.face_narrow, 0.03))
    evidence = f"width/length={width:.3f}, skin width at mouth={mouth_w:.2f}"
    return {
        "head_shape": Reading(value, conf, evidence),
        "jaw": Reading(
            "strong" if nose_chin >= t.jaw_strong else "soft",
            _conf(nose_chin, t.jaw_strong, 0.05),
            f"nose-to-chin/length={nose_chin:.3f}",
        ),
    }


def _sclera_gain(af: AlignedFace, feats: dict[str, float]) -> float:
    """Exposure correction from the whites of the eyes, which are near white in every face.

    The brighter half of the pixels inside both eye outlines (iris excluded) is taken as
    the sclera; its display lightness against an ideal 0.94 gives the light falling on
    the face. Clipped, and only half applied, because lids shade real eyes.
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
        return 1.0
    bright = np.sort(px[:, 0])[len(px) // 2 :]
    sclera_l = float(np.median(bright))
    feats["sclera_L"] = sclera_l
    # L* -> display value (inverse of the L* curve and the sRGB curve are close enough here).
    grey = ((sclera_l + 16) / 116) ** 3
    grey = grey ** (1 / 2.2)
    gain = float(np.clip(0.94 / max(grey, 1e-3), 0.75, 1.4))
    return float(np.sqrt(gain))


# Upper and lower lid contours of each eye, in order around the eye.
EYE_OUTLINE_LEFT = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
EYE_OUTLINE_RIGHT = (362, 398, 384, 385, 386, 387, 388, 466, 263, 249, 390, 373, 374, 380, 381, 382)


def _skin(af: AlignedFace, feats: dict[str, float]) -> tuple[np.ndarray, dict[str, Reading]]:
    """Skin colour from both cheeks (the brighter one: the other may be in shadow)."""
    p = af.points
    cheeks = []
    for i in (50, 280):  # cheek centres below the eyes, beside the nose
        px = af.disk(p[i], 0.05)
        if len(px) >= 5:
            cheeks.append(median_colour(px))
    if not cheeks:
        return np.full(3, np.nan), {}
    skin = max(cheeks, key=lambda lab: lab[0])
    gain = _sclera_gain(af, feats)
    feats["skin_gain"] = gain
    # Apply the exposure gain in display RGB, then compare with the palette.
    corrected = rgb_to_lab(np.clip(lab_to_rgb(skin) * gain, 0.0, 1.0))
    value, conf, _ = nearest_colour(corrected, SKIN_REF, weights=(1.0, 0.5, 0.5), temperature=4.0)
    evidence = f"cheek L*={skin[0]:.1f} a*={skin[1]:.1f} b*={skin[2]:.1f}, exposure x{gain:.2f}"
    return skin, {"skin_tone": Reading(value, conf, evidence)}


def _background(af: AlignedFace) -> list[np.ndarray]:
    """Backdrop colours left of, right of and above the head (wherever the photo has pixels)."""
    out = []
    for u0, u1, v0, v1 in ((CANON_U[0], -0.95, CANON_V[0], 0.6), (0.95, CANON_U[1], CANON_V[0], 0.6),
                           (-0.95, 0.95, CANON_V[0], -0.7)):  # fmt: skip
        px = af.box(u0, u1, v0, v1)
        if len(px) >= 20:
            out.append(median_colour(px))
    return out


def _hair(
    af: AlignedFace, skin: np.ndarray, bg: list[np.ndarray], feats: dict[str, float]
) -> tuple[dict[str, Reading], np.ndarray | None]:
    """Hair presence, colour and coarse length from bands above and beside the face.

    Returns the readings and the measured hair colour (Lab (3,), None when bald or unseen).
    """

    def not_bg(px: np.ndarray) -> np.ndarray:
        if not bg:
            return np.ones(len(px), bool)
        return np.min([delta_e(px, b) for b in bg], axis=0) > t.hair_bg_de

    # 1. The band just above the forehead: hair, skin (bald) or backdrop (bald, short crop).
    top = af.box(-0.22, 0.22, -0.28, -0.06)
    if len(top) < 20:
        return {}, None
    t = THRESHOLDS
    is_hair = not_bg(top) & (delta_e_shaded(top, skin) > t.hair_skin_de)
    frac = float(is_hair.mean())
    feats["hair_top_fraction"] = frac
    if frac < t.hair_bald_max:
        conf = _conf(frac, t.hair_bald_max, 0.08)
        return {"hair_style": Reading("bald", conf, f"hair above forehead {frac:.0%}")}, None
    colour = median_colour(top[is_hair])
    value, cconf, _ = nearest_colour(colour, HAIR_REF, weights=(0.6, 1.0, 1.0), temperature=6.0)
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
    feats |= {"hair_ear": ear, "hair_jaw": jaw, "hair_below": below}
    # Coarse: "short" stands for every style that keeps the sides short (buzz, short, bun,
    # ponytail), "bob" for hair down to the jaw (bob, curls), "long" for hair past the chin.
    not_bald = _conf(frac, t.hair_bald_max, 0.08)
    if below >= t.hair_long_w and max(ear, jaw) >= t.hair_side_min:
        style, conf = "long", _conf(below, t.hair_long_w, 0.08)
    elif ear >= t.hair_bob_ear_w or jaw >= t.hair_bob_jaw_w:
        style = "bob"
        conf = min(
            max(_conf(ear, t.hair_bob_ear_w, 0.08), _conf(jaw, t.hair_bob_jaw_w, 0.05)),
            _conf(below, t.hair_long_w, 0.08),
        )
    else:
        style = "short"
        conf = min(
            _conf(ear, t.hair_bob_ear_w, 0.08),
            _conf(jaw, t.hair_bob_jaw_w, 0.03),
            _conf(below, t.hair_long_w, 0.08),
        )
    conf = min(conf, not_bald)
    out["hair_style"] = Reading(
        style, conf, f"hair width beside ears {ear:.2f}, jaw {jaw:.2f}, below chin {below:.2f}"
    )
    return out, colour


BROWS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)


def _moustache_band(af: AlignedFace, skin: np.ndarray, ref: np.ndarray) -> float:
    """Largest fraction of a row between nose tip and mouth that looks like facial hair.

    A pixel looks like facial hair when it is nearer the hair (or brow) colour than both the
    cheek skin and the lips; lips are a band of their own colour there, so they do not count.
    """
    p = af.points
    u, v = af.uv()
    lips = median_colour(
        np.concatenate([af.disk(0.5 * (p[0] + p[13]), 0.015), af.disk(0.5 * (p[14] + p[17]), 0.015)])
    )
    if np.isnan(lips).any() or np.isnan(ref).any():
        return float("nan")
    half = 0.5 * (p[fm.MOUTH_RIGHT, 0] - p[fm.MOUTH_LEFT, 0])
    centre_u = 0.5 * (p[fm.MOUTH_RIGHT, 0] + p[fm.MOUTH_LEFT, 0])
    region = (
        af.valid
        & (np.abs(u - centre_u) <= half)
        & (v > p[fm.NOSE_TIP, 1])
        & (v < 0.5 * (p[13, 1] + p[14, 1]))
    )
    d_ref = delta_e_shaded(af.lab, ref)
    hairy = region & (d_ref < delta_e_shaded(af.lab, skin)) & (d_ref < delta_e_shaded(af.lab, lips))
    rows = region.sum(axis=1)
    frac = np.where(rows > 0, hairy.sum(axis=1) / np.maximum(rows, 1), 0.0)
    smooth = np.convolve(frac, np.ones(3) / 3, mode="same")
    return float(smooth.max()) if rows.any() else float("nan")


def _lower_face(
    af: AlignedFace, skin: np.ndarray, hair: np.ndarray | None, feats: dict[str, float]
) -> dict[str, Reading]:
    """Beard and moustache: lower-face regions against the cheek skin and the hair (or brow) colour."""
    p = af.points
    brow = median_colour(np.concatenate([af.disk(p[i], 0.02) for i in BROWS]))
    ref = hair if hair is not None else brow
    axis = ref - skin
    contrast = float(np.linalg.norm(axis))

    def toward_hair(center: np.ndarray, radius: float) -> float:
        """Median position of the region's pixels on the skin (0) -> hair colour (1) line."""
        px = af.disk(center, radius)
        if len(px) < 5 or contrast < 1e-6:
            return float("nan")
        return float(np.median((px - skin) @ axis) / contrast**2)

    feats["facial_hair_contrast"] = contrast

    def diff(center: np.ndarray, radius: float) -> float:
        px = af.disk(center, radius)
        return float(np.median(delta_e(px, skin))) if len(px) >= 5 else float("nan")

    t = THRESHOLDS
    chin = diff(0.5 * (p[fm.LOWER_LIP] + p[fm.CHIN]), 0.05)
    jaw_regions = [0.6 * (0.5 * (p[j] + p[fm.CHIN])) + 0.4 * p[m]
                   for j, m in ((fm.JAW_LEFT, fm.MOUTH_LEFT), (fm.JAW_RIGHT, fm.MOUTH_RIGHT))]  # fmt: skip
    jaws = [diff(c, 0.04) for c in jaw_regions]
    jaw = float(np.nanmin(jaws)) if not np.all(np.isnan(jaws)) else float("nan")
    lip = diff(0.5 * (p[2] + p[fm.UPPER_LIP]), 0.025)
    band = _moustache_band(af, skin, ref)
    feats["moustache_band"] = band
    t_chin = toward_hair(0.5 * (p[fm.LOWER_LIP] + p[fm.CHIN]), 0.05)
    t_jaw = float(np.nanmin([toward_hair(c, 0.04) for c in jaw_regions]))
    feats |= {"beard_chin": chin, "beard_jaw": jaw, "moustache_lip": lip, "t_chin": t_chin, "t_jaw": t_jaw}
    out: dict[str, Reading] = {}
    if not np.isnan(chin) and not np.isnan(jaw):
        c_chin, c_jaw = _conf(chin, t.beard_de, 10), _conf(jaw, t.beard_de, 10)
        if chin >= t.beard_de and jaw >= t.beard_de:
            # Stubble is skin with some hair colour in it; a full beard is the hair colour.
            mix = min(t_chin, t_jaw)
            full = mix >= t.beard_full_t
            value, conf = ("full" if full else "stubble"), min(c_chin, c_jaw, _conf(mix, t.beard_full_t, 0.3))
        elif chin >= t.beard_de:
            value, conf = "goatee", min(c_chin, c_jaw)
        elif jaw >= t.beard_de:
            value, conf = "stubble", min(c_chin, c_jaw)
        else:
            value, conf = "none", min(c_chin, c_jaw)
        out["beard"] = Reading(
            value,
            conf,
            f"ΔE to skin: chin {chin:.1f}, jaw {jaw:.1f}; toward hair colour {t_chin:.2f}, {t_jaw:.2f}",
        )
    if not np.isnan(band):
        has = band >= t.moustache_band
        conf = _conf(band, t.moustache_band, 0.3)
        out["moustache"] = Reading(
            "moustache" if has else "none",
            conf,
            f"facial-hair row above the mouth {band:.0%} (ΔE lip {lip:.1f})",
        )
    return out


def _eyes(af: AlignedFace, skin: np.ndarray, feats: dict[str, float]) -> dict[str, Reading]:
    """Glasses from frame pixels around the eyes; eye colour from the irises when large enough."""
    t = THRESHOLDS
    p = af.points
    out: dict[str, Reading] = {}
    fracs = []
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
        feats |= {"glasses_rim": rim, "glasses_bridge": bridge, "glasses_corners": corners}
        score = rim + bridge
        evidence = f"frame pixels under eyes {rim:.0%}, bridge {bridge:.0%}, rim corners {corners:.0%}"
        present = _conf(score, t.glasses_score, 0.3)
        if score >= t.glasses_score:
            # The shape is the weaker cue: square rims cross the corners below each eye.
            square = corners >= t.glasses_square_corners
            conf = min(present, 0.5 + 0.45 * _ramp(abs(corners - t.glasses_square_corners), 0, 0.2))
            out["glasses"] = Reading("square" if square else "round", conf, evidence)
        else:
            out["glasses"] = Reading("none", present, evidence)

    # Eye colour: the iris ring between pupil and limbus, skipping highlights and lids.
    iris_r = np.mean([np.linalg.norm(p[468] - p[469]), np.linalg.norm(p[473] - p[474])])
    iris_px = iris_r * af.face_px
    feats["iris_px"] = float(iris_px)
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
            value, conf, _ = nearest_colour(colour, IRIS_REF, weights=(0.5, 1.0, 1.0), temperature=5.0)
            conf *= _ramp(iris_px, 3.0, 5.0)
            out["eye_color"] = Reading(
                value,
                conf,
                f"iris L*={colour[0]:.1f} a*={colour[1]:.1f} b*={colour[2]:.1f}, {iris_px:.1f} px",
            )
    return out


def read_attributes(photo: Photo, face: fm.FaceLandmarks) -> PhotoReading:
    """Measure every readable attribute of the face in ``photo``.

    Steps: 1. align the face; 2. skin colour (the reference for everything else); 3. shape from
    landmarks; 4. hair above and beside the face; 5. beard and moustache; 6. glasses and eyes;
    7. drop colour readings for greyscale photos and scale confidence for small faces.
    """
    warnings = list(photo.notes) + list(face.warnings)
    feats: dict[str, float] = {}
    # 1-2.
    af = align_face(photo, face)
    skin, readings = _skin(af, feats)
    if np.isnan(skin).any():
        raise fm.NoFaceError("the cheeks are not visible in the photo; use a front-facing photo", "no_face")
    # 3-6.
    readings |= _shape(af, skin, feats)
    hair_readings, hair_lab = _hair(af, skin, _background(af), feats)
    readings |= hair_readings
    readings |= _lower_face(af, skin, hair_lab, feats)
    readings |= _eyes(af, skin, feats)
    # A turned head skews width ratios: the nose tip sits off the cheek-to-cheek midline.
    p = af.points
    yaw = (p[fm.NOSE_TIP, 0] - p[fm.FACE_LEFT, 0]) / max(p[fm.FACE_RIGHT, 0] - p[fm.FACE_LEFT, 0], 1e-6) - 0.5
    feats["yaw"] = float(yaw)
    if abs(yaw) > 0.12:
        warnings.append("the face is turned away from the camera; it is read less reliably")
        for n, r in readings.items():
            readings[n] = Reading(
                r.value, r.confidence * (0.5 if n in ("head_shape", "jaw") else 0.8), r.evidence
            )
    # 7.
    if photo.greyscale:
        for n in ("skin_tone", "eye_color"):
            readings.pop(n, None)
        hc = readings.get("hair_color")
        if hc is not None and hc.value not in _GREY_READABLE_HAIR:
            readings.pop("hair_color")
        elif hc is not None:
            readings["hair_color"] = Reading(hc.value, 0.8 * hc.confidence, hc.evidence + " (greyscale)")
    small = _ramp(af.face_px, fm.MIN_FACE_PX, fm.SMALL_FACE_PX * 1.5)
    if small < 1.0:
        readings = {
            n: Reading(r.value, r.confidence * (0.5 + 0.5 * small), r.evidence) for n, r in readings.items()
        }
    inv = 1.0 / photo.scale
    return PhotoReading(
        readings=readings,
        face_box=tuple(float(v) * inv for v in face.box),
        landmarks=face.points * inv,
        warnings=tuple(warnings),
        unread=tuple(n for n in VOCAB if n not in readings),
        features=feats,
    )


def turned(photo: Photo, quarter_turns: int) -> Photo:
    """``photo`` rotated counter-clockwise by ``quarter_turns`` x 90 degrees, with a note saying so."""
    k = quarter_turns % 4
    if k == 0:
        return photo
    w, h = photo.original_size
    note = (
        f"the photo was turned {90 * k} degrees counter-clockwise to make the face upright "
        "(face box and landmarks refer to the turned photo)"
    )
    return replace(
        photo,
        rgb=np.ascontiguousarray(np.rot90(photo.rgb, k)),
        valid=np.ascontiguousarray(np.rot90(photo.valid, k)),
        original_size=(h, w) if k % 2 else (w, h),
        notes=(*photo.notes, note),
    )


def find_upright_face(photo: Photo) -> tuple[Photo, fm.FaceLandmarks]:
    """The face in ``photo``, turning the photo by quarter turns until the face is upright.

    Photos stored sideways or upside down without an EXIF orientation tag are common
    (stripped metadata). The detectors find some rolled faces directly and others only
    after a turn; either way the photo is then turned so the chin is below the forehead,
    because the readers measure regions in an upright face best.

    Raises:
        NoFaceError: no face in any orientation (the upright attempt's error).
    """
    # 1. Find the face as stored, else in the other three orientations. Sideways first: the
    # landmark model fits a rolled face correctly once found, but on an upside-down face it
    # can return an upright-looking mesh in the wrong place, so 180 degrees is the last resort.
    turns = 0
    try:
        face = fm.find_face(photo)
    except fm.NoFaceError as upright_error:
        if upright_error.reason != "no_face":
            raise
        for k in (3, 1, 2):
            try:
                face = fm.find_face(turned(photo, k))
            except fm.NoFaceError:
                continue
            turns = k
            break
        else:
            raise
    # 2. Quarter turns that bring the face's up direction (chin -> forehead) nearest to image up.
    up = face.points[fm.FOREHEAD_TOP] - face.points[fm.CHIN]
    angle = np.degrees(np.arctan2(-up[1], up[0]))  # 90 = upright (image y points down)
    fix = int(round((90.0 - angle) / 90.0)) % 4
    if fix == 0:
        return turned(photo, turns), face
    try:
        return turned(photo, turns + fix), fm.find_face(turned(photo, turns + fix))
    except fm.NoFaceError:
        return turned(photo, turns), face


def read_photo(source: bytes | str | Path) -> PhotoReading:
    """Load ``source`` (bytes or a path), find the face (turning the photo upright) and read it.

    Raises:
        PhotoError: bad file, or no usable face (``NoFaceError``). Nothing is written.
    """
    photo, face = find_upright_face(load_photo(source))
    return read_attributes(photo, face)


assert set(SKIN_REF) == set(VOCAB["skin_tone"]) and set(HAIR_REF) == set(VOCAB["hair_color"])
assert set(IRIS_REF) == set(VOCAB["eye_color"])
