"""The lower face: beard and moustache, against the cheek skin and the hair (or brow) colour."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.avatar.reading import face as fm
from core.avatar.reading.align import AlignedFace
from core.avatar.reading.colour import delta_e, delta_e_shaded, median_colour
from core.avatar.reading.readings import THRESHOLDS, Reading, confidence


@dataclass(frozen=True)
class LowerFaceFeatures:
    """What the lower-face reader measured (Delta E to the cheek skin, unless said otherwise)."""

    contrast: float
    """Delta E between the skin and the hair (or brow) colour: how visible facial hair can be."""
    chin: float
    jaw: float
    upper_lip: float
    moustache_band: float
    """Largest fraction of a row between nose and mouth that looks like facial hair."""
    chin_toward_hair: float
    """Chin pixels' position on the skin (0) -> hair colour (1) line."""
    jaw_toward_hair: float


BROWS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)


def moustache_band(af: AlignedFace, skin: np.ndarray, ref: np.ndarray) -> float:
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


def read_lower_face(
    af: AlignedFace, skin: np.ndarray, hair: np.ndarray | None
) -> tuple[dict[str, Reading], LowerFaceFeatures]:
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
    band = moustache_band(af, skin, ref)
    t_chin = toward_hair(0.5 * (p[fm.LOWER_LIP] + p[fm.CHIN]), 0.05)
    t_jaw = float(np.nanmin([toward_hair(c, 0.04) for c in jaw_regions]))
    features = LowerFaceFeatures(contrast, chin, jaw, lip, band, t_chin, t_jaw)
    out: dict[str, Reading] = {}
    if not np.isnan(chin) and not np.isnan(jaw):
        c_chin, c_jaw = confidence(chin, t.beard_de, 10), confidence(jaw, t.beard_de, 10)
        if chin >= t.beard_de and jaw >= t.beard_de:
            # Stubble is skin with some hair colour in it; a full beard is the hair colour.
            mix = min(t_chin, t_jaw)
            full = mix >= t.beard_full_t
            value, conf = (
                ("full" if full else "stubble"),
                min(c_chin, c_jaw, confidence(mix, t.beard_full_t, 0.3)),
            )
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
        conf = confidence(band, t.moustache_band, 0.3)
        out["moustache"] = Reading(
            "moustache" if has else "none",
            conf,
            f"facial-hair row above the mouth {band:.0%} (ΔE lip {lip:.1f})",
        )
    return out, features
