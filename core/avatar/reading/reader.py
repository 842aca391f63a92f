"""Read a face photo into avatar attributes: find the face upright, align it, run each region's reader."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from core.avatar.reading import face as fm
from core.avatar.reading.align import align_face
from core.avatar.reading.eyes import read_eyes
from core.avatar.reading.hair import read_hair
from core.avatar.reading.lower_face import read_lower_face
from core.avatar.reading.photo import Photo, load_photo
from core.avatar.reading.presentation import read_presentation
from core.avatar.reading.readings import FaceFeatures, PhotoReading, Reading, ramp
from core.avatar.reading.shape import read_shape
from core.avatar.reading.skin import backdrop_colours, read_skin
from core.avatar.vocab.attributes import VOCAB

# In a greyscale photo only lightness is left: these hair colours are the ones it can tell.
_GREY_READABLE_HAIR = ("black", "grey", "white")


def read_attributes(photo: Photo, face: fm.FaceLandmarks) -> PhotoReading:
    """Measure every readable attribute of the face in ``photo``.

    Steps: 1. align the face; 2. skin colour (the reference for everything else); 3. shape from
    landmarks; 4. hair above and beside the face; 5. beard and moustache; 6. glasses and eyes;
    7. presentation from facial hair and lips;
    8. drop colour readings for greyscale photos and scale confidence for small faces.
    """
    warnings = list(photo.notes) + list(face.warnings)
    # 1-2.
    af = align_face(photo, face)
    skin, readings, skin_features = read_skin(af)
    if np.isnan(skin).any():
        raise fm.NoFaceError("the cheeks are not visible in the photo; use a front-facing photo", "no_face")
    # 3-6.
    shape_readings, shape_features = read_shape(af, skin)
    hair_readings, hair_lab, hair_features = read_hair(af, skin, backdrop_colours(af))
    lower_readings, lower_features = read_lower_face(af, skin, hair_lab)
    eye_readings, eye_features = read_eyes(af, skin)
    readings |= shape_readings | hair_readings | lower_readings | eye_readings
    readings["presentation"] = read_presentation(af, readings)
    # A turned head skews width ratios: the nose tip sits off the cheek-to-cheek midline.
    p = af.points
    yaw = (p[fm.NOSE_TIP, 0] - p[fm.FACE_LEFT, 0]) / max(p[fm.FACE_RIGHT, 0] - p[fm.FACE_LEFT, 0], 1e-6) - 0.5
    if abs(yaw) > 0.12:
        warnings.append("the face is turned away from the camera; it is read less reliably")
        for n, r in readings.items():
            readings[n] = Reading(
                r.value, r.confidence * (0.5 if n in ("head_shape", "jaw") else 0.8), r.evidence
            )
    # 8.
    if photo.greyscale:
        for n in ("skin_tone", "eye_color"):
            readings.pop(n, None)
        hc = readings.get("hair_color")
        if hc is not None and hc.value not in _GREY_READABLE_HAIR:
            readings.pop("hair_color")
        elif hc is not None:
            readings["hair_color"] = Reading(hc.value, 0.8 * hc.confidence, hc.evidence + " (greyscale)")
    small = ramp(af.face_px, fm.MIN_FACE_PX, fm.SMALL_FACE_PX * 1.5)
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
        features=FaceFeatures(
            skin_features, shape_features, hair_features, lower_features, eye_features, float(yaw)
        ),
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
