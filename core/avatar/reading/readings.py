"""What photo reading produces: a Reading per attribute, the decision thresholds, the whole PhotoReading."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from core.avatar.reading.eyes import EyeFeatures
    from core.avatar.reading.hair import HairFeatures
    from core.avatar.reading.lower_face import LowerFaceFeatures
    from core.avatar.reading.shape import ShapeFeatures
    from core.avatar.reading.skin import SkinFeatures

MIN_CONFIDENCE = 0.5
"""Readings below this confidence are reported but not used: the avatar model samples them."""


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
    beard_de: float = 30.0
    """Chin or jaw regions at least this far from the cheek skin hold facial hair. Recalibrated on
    engine v2 (``python -m bench.photo_calibrate``): held-out beard accuracy 0.64 -> 0.89, majority
    chance 0.74; engine v2's shaded lower face sits 12-30 away from the cheek without any hair."""
    beard_full_t: float = 0.5
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


def ramp(x: float, lo: float, hi: float) -> float:
    """0 at ``lo``, 1 at ``hi``, linear between (a soft threshold used for confidences)."""
    return float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))


def confidence(x: float, threshold: float, scale: float) -> float:
    """Confidence of a decision made by comparing ``x`` with ``threshold``.

    0.3 on the boundary, 0.95 at ``scale`` or more away from it: a reading within about
    a third of ``scale`` of its boundary stays below ``MIN_CONFIDENCE`` and is not used.
    """
    return 0.3 + 0.65 * ramp(abs(x - threshold), 0.0, scale)


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
class FaceFeatures:
    """The measurements of every face region, each region's reader's own typed record."""

    skin: SkinFeatures
    shape: ShapeFeatures
    hair: HairFeatures
    lower_face: LowerFaceFeatures
    eyes: EyeFeatures
    yaw: float
    """Nose tip's offset from the cheek-to-cheek midline, in face widths (0 = facing the camera)."""


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
    features: FaceFeatures | None = None
    """The measurements behind the readings, per face region (for calibration and debugging)."""

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
