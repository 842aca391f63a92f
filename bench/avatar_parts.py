"""Read an avatar part by part: which parts its surface has, and their colours.

The whole-avatar descriptor of ``bench.avatar_eval`` sees a 5 mm face image, where an iris is
two pixels and a frame one. This one asks the field itself: surface points are sampled over the
whole avatar and, densely, inside the face box; each point gets its fine part label (the engine's
``nearest_part``, the decoder's ``fine_parts``) and its albedo. Per part and per region the
descriptor holds the share of surface points and their mean colour, plus the colour of the iris
(the eye points that are neither pupil nor sclera, sampled densely in ``EYE_BOX``) and the
``EXTRAS``. A classifier trained on engine avatars' descriptors then reads eye
colour, glasses, beard, moustache, hair colour and hat colour from any avatar with part labels.

``facial_hair_share`` is the share of face-box surface labelled beard or moustache: exactly 0 on
an engine avatar without facial hair, so ``FACIAL_HAIR_SHARE`` counts an avatar as bearded.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from core.avatar.vocab.parts import PART_NAMES
from core.fields.base import Field

FACE_BOX = ((-0.12, 0.12), (-0.16, 0.04), (-0.07, 0.25))
"""The face's box (metres, as the training data's ``FACE_BOX``)."""
EYE_BOX = ((-0.065, 0.065), (-0.13, -0.05), (0.10, 0.14))
"""The box (metres) both eyes sit in on every engine avatar (centres at x = ±0.031, z = 0.12).
The iris is read from surface points sampled densely here: among the face box's points an iris
is a handful or none (no iris was found on a third of the engine's own avatars)."""
FACIAL_HAIR_SHARE = 0.01
"""Share of the face box's surface labelled beard or moustache from which an avatar has facial
hair. The engine's smallest facial hair, a goatee, covers several per cent of it; stubble is a
colour on the skin, not a part, and is not counted."""
PART_ATTRIBUTES = ("eye_color", "hair_color", "beard", "moustache", "glasses", "headwear", "headwear_color")
"""The attributes a part reading is scored on."""
READ_FROM: dict[str, tuple[str, ...]] = {
    "eye_color": ("eyes",),
    "hair_color": ("hair", "brows"),
    "beard": ("beard", "moustache", "skin", "lips"),
    "moustache": ("moustache", "beard", "lips", "skin"),
    "glasses": ("glasses", "eyes", "skin"),
    "headwear": ("hat", "hair", "skin"),
    "headwear_color": ("hat",),
}
"""The parts each attribute is read from (``focused_columns``): a moustache from the mouth's
parts, not from whether the hat above it is the engine's. Read from the whole descriptor, a
present moustache was read as none when another part differed from the engine's (measured on
model v4 jobs: the moustache's rays at the mouth 196 against the engine's 198 of 525, read as
none on 7 of 19)."""


JAW_BAND = (-0.02, 0.05)
"""Heights (metres) of the jaw and chin below the mouth on every engine head (centre z = 0.10),
inside the area engine stubble colours at any sag."""
CHEEK_BAND = (0.075, 0.105)
"""Heights (metres) of the cheeks between mouth and eyes, above the stubble's area: the face's
own skin colour, which the jaw's is compared with."""
EXTRAS = 15
"""Values at the descriptor's end: the skin's mean colour on the jaw (0:3) and on the cheeks
(3:6), the hat's mean position and spread (6:12; a cap's brim reaches forward, a beanie's crown
sits high) and how far the jaw's colour is from the cheeks' per channel (12:15). Stubble is a
colour on the jaw's skin, not a part, and takes it towards the hair colour: darker on light
skin, lighter (blonde, grey) on dark skin, so the jaw minus the cheeks alone does not read it
(measured on 23 engine avatars with stubble: -0.03 ± 0.17)."""
EXTRA_COLUMNS: dict[str, tuple[range, ...]] = {
    "beard": (range(0, 6), range(12, 15)),
    "headwear": (range(6, 12),),
}
"""Which of the ``EXTRAS`` each attribute also reads."""


def focused_columns(name: str) -> np.ndarray:
    """The descriptor columns (``part_reading``) of the parts ``READ_FROM[name]``: each part's
    share and colour in the face box and over the whole avatar, and the iris for eye colour."""
    p = len(PART_NAMES)
    cols: list[int] = []
    for part in READ_FROM[name]:
        i = PART_NAMES.index(part)
        cols.extend(range(4 * i, 4 * i + 4))  # face box: share, rgb
        cols.extend(range(4 * p + 3 + 4 * i, 4 * p + 3 + 4 * i + 4))  # whole avatar
    if name == "eye_color":
        cols.extend(range(4 * p, 4 * p + 3))
    for r in EXTRA_COLUMNS.get(name, ()):
        cols.extend(8 * p + 3 + k for k in r)
    return np.asarray(sorted(cols), np.int64)


def fine_labeller(field: Field) -> Callable[[np.ndarray], np.ndarray] | None:
    """The field's per-point ``PART_NAMES`` labels, or None for a field without them."""
    fine = getattr(field, "fine_parts", None)
    if fine is not None:
        decoder = getattr(field, "decoder", None)
        if decoder is None or decoder.cfg.parts:
            return fine
        return None
    return getattr(field, "nearest_part", None)


def project_to_surface(field: Field, points: np.ndarray, steps: int) -> np.ndarray:
    """``steps`` Newton steps of ``points`` onto the zero level set along the numerical gradient."""
    c = points
    for _ in range(steps):
        d = field.value(c)
        e = 1e-3
        g = np.stack(
            [field.value(c + e * u) - field.value(c - e * u) for u in np.eye(3, dtype=np.float32)], 1
        )
        g /= np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-6)
        c = (c - d[:, None] * g).astype(np.float32)
    return c


def surface_in_box(
    field: Field, lo: np.ndarray, hi: np.ndarray, n: int, rng: np.random.Generator, tries: int = 8
) -> np.ndarray:
    """Up to ``n`` points on the field's zero level set inside the box [lo, hi] -> (m, 3)."""
    lo, hi = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
    band = 0.02
    out = np.zeros((0, 3), np.float32)
    for _ in range(tries):
        c = rng.uniform(lo, hi, (30000, 3)).astype(np.float32)
        c = c[np.abs(field.value(c)) < band]
        c = project_to_surface(field, c, 3)
        keep = (np.abs(field.value(c)) < 0.002) & np.all((c >= lo) & (c <= hi), axis=1)
        out = np.concatenate([out, c[keep]])
        if len(out) >= n:
            break
    return out[rng.permutation(len(out))[:n]]


def _region_features(labels: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    feats = []
    for i in range(len(PART_NAMES)):
        m = labels == i
        share = float(m.mean()) if len(m) else 0.0
        colour = rgb[m].mean(0) if m.any() else np.zeros(3)
        feats.extend([share, *colour])
    return np.asarray(feats, np.float32)


def _extras(
    face: np.ndarray, lf: np.ndarray, cf: np.ndarray, whole: np.ndarray, lw: np.ndarray
) -> np.ndarray:
    skin = lf == PART_NAMES.index("skin")
    front = np.abs(face[:, 0]) < 0.09

    def mean_skin(band: tuple[float, float]) -> np.ndarray:
        m = skin & front & (face[:, 2] > band[0]) & (face[:, 2] < band[1])
        return cf[m].mean(0) if m.sum() >= 3 else np.zeros(3)

    hat = whole[lw == PART_NAMES.index("hat")]
    where = np.concatenate([hat.mean(0), hat.std(0)]) if len(hat) >= 3 else np.zeros(6)
    jaw, cheek = mean_skin(JAW_BAND), mean_skin(CHEEK_BAND)
    return np.concatenate([jaw, cheek, where, np.abs(jaw - cheek)]).astype(np.float32)


def part_reading(
    field: Field, rng: np.random.Generator, n_face: int = 3000, n_all: int = 2000, n_eyes: int = 1500
) -> dict:
    """The part-by-part reading of one avatar: ``descriptor`` (the classifier's input) and
    ``facial_hair_share``. Raises ValueError for a field without part labels."""
    label = fine_labeller(field)
    if label is None:
        raise ValueError("this field has no part labels (a model v3 or older decoder)")
    (x0, x1), (y0, y1), (z0, z1) = FACE_BOX
    face = surface_in_box(field, (x0, y0, z0), (x1, y1, z1), n_face, rng)
    whole = surface_in_box(field, field.bbox_min, field.bbox_max, n_all, rng)
    lf, lw = label(face), label(whole)
    cf, cw = field.albedo(face), field.albedo(whole)
    (ex0, ex1), (ey0, ey1), (ez0, ez1) = EYE_BOX
    around = surface_in_box(field, (ex0, ey0, ez0), (ex1, ey1, ez1), n_eyes, rng)
    eyes = label(around) == PART_NAMES.index("eyes")
    iris = np.zeros(3, np.float32)
    if eyes.any():  # the eye points that are neither pupil (near black) nor sclera (near white)
        c = field.albedo(around[eyes])
        ring = (c.max(1) > 0.06) & (c.min(1) < 0.75)
        if ring.sum() >= 3:
            iris = c[ring].mean(0)
    facial = np.isin(lf, [PART_NAMES.index("beard"), PART_NAMES.index("moustache")])
    descriptor = np.concatenate(
        [_region_features(lf, cf), iris, _region_features(lw, cw), _extras(face, lf, cf, whole, lw)]
    )
    return {
        "descriptor": descriptor.astype(np.float32),
        "facial_hair_share": float(facial.mean()) if len(facial) else 0.0,
        "face_points": len(face),
    }


def has_facial_hair(reading: dict) -> bool:
    """Whether a part reading shows a beard or a moustache."""
    return reading["facial_hair_share"] >= FACIAL_HAIR_SHARE
