"""Face shape: head_shape and jaw from landmark ratios and the skin's width."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.avatar.reading import face as fm
from core.avatar.reading.align import AlignedFace
from core.avatar.reading.readings import THRESHOLDS, Reading, confidence
from core.avatar.reading.skin import skin_width


@dataclass(frozen=True)
class ShapeFeatures:
    """What the shape reader measured, in face lengths (forehead top to chin)."""

    width: float
    """Cheek-to-cheek landmark width."""
    nose_chin: float
    """Nose tip to chin height."""
    mouth_skin_width: float
    """Skin width at mouth height (NaN when unseen)."""


def read_shape(af: AlignedFace, skin: np.ndarray) -> tuple[dict[str, Reading], ShapeFeatures]:
    """head_shape and jaw from landmark ratios and the skin's width (eyes level, face-length units)."""
    t = THRESHOLDS
    p = af.points
    width = float(p[fm.FACE_RIGHT, 0] - p[fm.FACE_LEFT, 0])
    nose_chin = float(p[fm.CHIN, 1] - p[fm.NOSE_TIP, 1])
    mouth_w = skin_width(af, skin, 0.65, 0.75)
    if width >= t.face_wide:
        square = not np.isnan(mouth_w) and mouth_w >= t.square_mouth_w
        value = "square" if square else "round"
        conf = min(
            confidence(width, t.face_wide, 0.06),
            confidence(mouth_w, t.square_mouth_w, 0.2) if square else 0.6,
        )
    elif width < t.face_narrow:
        value, conf = "long", confidence(width, t.face_narrow, 0.06)
    else:
        value = "oval"
        conf = min(confidence(width, t.face_wide, 0.03), confidence(width, t.face_narrow, 0.03))
    evidence = f"width/length={width:.3f}, skin width at mouth={mouth_w:.2f}"
    features = ShapeFeatures(width, nose_chin, mouth_w)
    return {
        "head_shape": Reading(value, conf, evidence),
        "jaw": Reading(
            "strong" if nose_chin >= t.jaw_strong else "soft",
            confidence(nose_chin, t.jaw_strong, 0.05),
            f"nose-to-chin/length={nose_chin:.3f}",
        ),
    }, features
