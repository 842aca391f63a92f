"""A found face resampled into face-length units with the eyes level, for region measurements."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.avatar.reading import face as fm
from core.avatar.reading.colour import rgb_to_lab
from core.avatar.reading.photo import Photo

CANON_PX = 128
"""Pixels per face length (forehead-top landmark to chin) in the aligned face crop."""
CANON_U = (-1.4, 1.4)
"""Aligned crop's horizontal extent in face lengths around the forehead-top landmark."""
CANON_V = (-0.9, 2.0)
"""Aligned crop's vertical extent in face lengths (negative is above the forehead)."""


@dataclass
class AlignedFace:
    """The photo resampled into face-length units with the eyes level.

    Attributes:
        lab: (Hc, Wc, 3) CIELAB pixels of the crop; ``valid`` (Hc, Wc) bool marks real photo pixels.
        points: (478, 2) landmarks in canonical units (u right, v down; forehead top at 0, 0; chin near 0, 1).
        face_px: face length in the analysed photo's pixels (how much detail there is).
    """

    lab: np.ndarray
    valid: np.ndarray
    points: np.ndarray
    face_px: float

    def uv(self) -> tuple[np.ndarray, np.ndarray]:
        """Canonical coordinates of every crop pixel centre: two (Hc, Wc) arrays."""
        h, w = self.valid.shape
        u = CANON_U[0] + (np.arange(w) + 0.5) / CANON_PX
        v = CANON_V[0] + (np.arange(h) + 0.5) / CANON_PX
        return np.meshgrid(u, v)

    def box(self, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
        """Valid Lab pixels inside a canonical box -> (N, 3)."""
        c = lambda x, lo: int(round((x - lo) * CANON_PX))  # noqa: E731
        h, w = self.valid.shape
        i0, i1 = np.clip([c(v0, CANON_V[0]), c(v1, CANON_V[0])], 0, h)
        j0, j1 = np.clip([c(u0, CANON_U[0]), c(u1, CANON_U[0])], 0, w)
        return self.lab[i0:i1, j0:j1][self.valid[i0:i1, j0:j1]]

    def disk(self, center: np.ndarray, radius: float) -> np.ndarray:
        """Valid Lab pixels within ``radius`` face lengths of a canonical point -> (N, 3)."""
        u, v = self.uv()
        m = ((u - center[0]) ** 2 + (v - center[1]) ** 2 <= radius**2) & self.valid
        return self.lab[m]


def align_face(photo: Photo, face: fm.FaceLandmarks) -> AlignedFace:
    """Resample ``photo`` so the eyes are level and the face is ``CANON_PX`` pixels long."""
    from PIL import Image

    P = face.points
    eye_l = P[list(fm.EYE_LEFT)].mean(0)
    eye_r = P[list(fm.EYE_RIGHT)].mean(0)
    ex = eye_r - eye_l
    ex /= max(np.linalg.norm(ex), 1e-9)
    ey = np.array([-ex[1], ex[0]])
    origin = P[fm.FOREHEAD_TOP]
    length = max(float(np.linalg.norm(P[fm.CHIN] - origin)), 1e-6)

    # PIL's affine transform maps output pixels to input pixels: in = A @ [X, Y, 1].
    w = int(round((CANON_U[1] - CANON_U[0]) * CANON_PX))
    h = int(round((CANON_V[1] - CANON_V[0]) * CANON_PX))
    s = length / CANON_PX
    c = origin + length * (CANON_U[0] * ex + CANON_V[0] * ey)
    coeffs = (s * ex[0], s * ey[0], c[0], s * ex[1], s * ey[1], c[1])
    rgb = Image.fromarray(photo.rgb).transform(
        (w, h), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR
    )
    valid = Image.fromarray(photo.valid.astype(np.uint8) * 255).transform(
        (w, h), Image.Transform.AFFINE, coeffs, Image.Resampling.NEAREST, fillcolor=0
    )
    rel = P - origin
    points = np.stack([rel @ ex, rel @ ey], axis=1) / length
    return AlignedFace(
        lab=rgb_to_lab(np.asarray(rgb, np.float64) / 255.0),
        valid=np.asarray(valid) > 127,
        points=points,
        face_px=length,
    )
