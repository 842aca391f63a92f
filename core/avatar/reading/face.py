"""Finding one face in a photo and its 478 MediaPipe face-mesh landmarks, offline."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from core.avatar.reading.photo import Photo, PhotoError

MIN_FACE_PX = 24
"""Faces narrower than this (in the analysed photo) are refused: no landmark model reads them."""
SMALL_FACE_PX = 80
"""Faces narrower than this are read with a warning and reduced confidence."""
MESH_FACE_PX = 256
"""The face crop handed to the landmark model is scaled so the face box is about this wide."""

# Canonical MediaPipe face-mesh indices used by the attribute reader. "Left"/"right" are the
# image's left and right for a face looking at the camera.
FOREHEAD_TOP = 10
CHIN = 152
FACE_LEFT = 234
FACE_RIGHT = 454
JAW_LEFT = 172
JAW_RIGHT = 397
EYE_LEFT = (33, 160, 158, 133, 153, 144)
EYE_RIGHT = (362, 385, 387, 263, 373, 380)
IRIS_LEFT = (468, 469, 470, 471, 472)
IRIS_RIGHT = (473, 474, 475, 476, 477)
NOSE_TIP = 1
NOSE_BRIDGE = 168
MOUTH_LEFT = 61
MOUTH_RIGHT = 291
UPPER_LIP = 0
LOWER_LIP = 17
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)  # fmt: skip


class NoFaceError(PhotoError):
    """No usable face in the photo."""


@dataclass(frozen=True)
class FaceLandmarks:
    """One face found in a ``Photo``.

    Attributes:
        points: (478, 2) float64 landmark positions in ``photo.rgb`` pixels (x right, y down).
        depth: (478,) float64 relative depth in the same pixel scale; smaller is nearer the camera.
        box: (x0, y0, x1, y1) bounding box of the landmarks in ``photo.rgb`` pixels.
        score: face detector confidence in [0, 1].
        faces_found: how many distinct faces the detectors saw (the largest one is used).
        warnings: things the artist should know ("3 faces found; using the largest", ...).
    """

    points: np.ndarray
    depth: np.ndarray
    box: tuple[float, float, float, float]
    score: float
    faces_found: int
    warnings: tuple[str, ...] = ()

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]


def _mediapipe():
    try:
        # Quieten TensorFlow Lite / absl start-up chatter on stderr.
        os.environ.setdefault("GLOG_minloglevel", "2")
        import mediapipe as mp
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "reading faces from photos needs mediapipe 0.10.21 (it ships the face-mesh model): "
            "pip install mediapipe==0.10.21"
        ) from e
    return mp


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller box's area: 1 when one box holds the other."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return inter / small if small > 0 else 0.0


def _tiles(h: int, w: int) -> list[tuple[int, int, int, int]]:
    """The whole image plus overlapping square-ish tiles, so small faces are seen larger.

    The detectors look at a 128 or 192 px version of their input; a 40 px face in a 1000 px
    photo shrinks to 8 px there and is missed, but not in a tile half the size.
    """
    regions = [(0, 0, w, h)]
    side = int(0.55 * max(h, w))
    if max(h, w) >= 384:
        ys = sorted({0, max(h - side, 0)})
        xs = sorted({0, max(w - side, 0)})
        if len(xs) == 2 and w > 2.2 * side:  # wide panoramas: a middle tile too
            xs.insert(1, (w - side) // 2)
        regions += [(x, y, min(x + side, w), min(y + side, h)) for y in ys for x in xs]
    return regions


def detect_faces(rgb: np.ndarray, min_confidence: float = 0.5) -> list[tuple[np.ndarray, float]]:
    """Face boxes from MediaPipe's short- and full-range detectors over the image and tiles, merged.

    Args:
        rgb: (H, W, 3) uint8 image.

    Returns:
        [(box (4,) float64 x0, y0, x1, y1 in pixels, score)], largest box first.
    """
    mp = _mediapipe()
    h, w = rgb.shape[:2]
    found: list[tuple[np.ndarray, float]] = []
    for model in (0, 1):  # 0: faces within ~2 m (portraits); 1: up to ~5 m (small faces)
        with mp.solutions.face_detection.FaceDetection(
            model_selection=model, min_detection_confidence=min_confidence
        ) as det:
            for x0, y0, x1, y1 in _tiles(h, w):
                result = det.process(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
                tw, th = x1 - x0, y1 - y0
                for d in result.detections or []:
                    r = d.location_data.relative_bounding_box
                    box = np.array([x0 + r.xmin * tw, y0 + r.ymin * th,
                                    x0 + (r.xmin + r.width) * tw, y0 + (r.ymin + r.height) * th])  # fmt: skip
                    box = np.clip(box, [0, 0, 0, 0], [w, h, w, h])
                    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                        continue
                    score = float(d.score[0]) if d.score else 0.0
                    dup = next((i for i, (b, _) in enumerate(found) if _overlap(b, box) > 0.5), None)
                    if dup is None:
                        found.append((box, score))
                    elif score > found[dup][1]:
                        found[dup] = (box, score)
    found.sort(key=lambda bs: -(bs[0][2] - bs[0][0]) * (bs[0][3] - bs[0][1]))
    return found


def _mesh(rgb: np.ndarray, max_faces: int = 1) -> list[np.ndarray]:
    """Face-mesh landmarks of up to ``max_faces`` faces: [(478, 3) normalised x, y, z]."""
    mp = _mediapipe()
    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=max_faces, refine_landmarks=True, min_detection_confidence=0.5
    ) as mesh:
        result = mesh.process(np.ascontiguousarray(rgb))
    return [
        np.array([(p.x, p.y, p.z) for p in f.landmark], np.float64) for f in result.multi_face_landmarks or []
    ]


def find_face(photo: Photo) -> FaceLandmarks:
    """The largest face in ``photo`` with its face-mesh landmarks.

    Steps: 1. detect face boxes (two detector ranges); 2. keep the largest, warn about the
    rest; 3. crop around it, scaled so the face is ~``MESH_FACE_PX`` wide (small faces get
    upscaled, which the mesh model needs); 4. run the face mesh on the crop and map its
    landmarks back; if it fails there, try the whole photo.

    Raises:
        NoFaceError: no face, or one too small or too turned away to read.
    """
    from PIL import Image

    rgb = photo.rgb
    h, w = rgb.shape[:2]
    warnings: list[str] = []

    # 1-2. Boxes, largest first.
    boxes = detect_faces(rgb)
    if not boxes:
        # The mesh's own detector occasionally finds a face the box detectors miss.
        meshes = _mesh(rgb, max_faces=4)
        if not meshes:
            raise NoFaceError(
                "no face found in the photo; use a well-lit, front-facing photo where the face is clearly visible",
                "no_face",
            )
        boxes = []
        for m in meshes:
            xy = m[:, :2] * [w, h]
            boxes.append((np.concatenate([xy.min(0), xy.max(0)]), 0.5))
        boxes.sort(key=lambda bs: -(bs[0][2] - bs[0][0]) * (bs[0][3] - bs[0][1]))
    box, score = boxes[0]
    if len(boxes) > 1:
        warnings.append(f"{len(boxes)} faces found; using the largest")
    face_w = box[2] - box[0]
    if face_w < MIN_FACE_PX:
        raise NoFaceError(
            f"the face is only {face_w / photo.scale:.0f} pixels wide; use a photo where the face is at least "
            f"{int(np.ceil(SMALL_FACE_PX / photo.scale))} pixels wide (crop closer or use a larger photo)",
            "face_too_small",
        )
    if face_w < SMALL_FACE_PX:
        warnings.append(f"the face is small ({face_w / photo.scale:.0f} px wide); details may be misread")

    # 3. Square crop around the box with room for the whole head (boxes cover brows to mouth).
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = 2.2 * max(face_w, box[3] - box[1])
    x0, y0 = cx - side / 2, cy - side / 2
    out = int(round(MESH_FACE_PX * 2.2))
    crop = Image.fromarray(rgb).transform(
        (out, out),
        Image.Transform.EXTENT,
        (x0, y0, x0 + side, y0 + side),
        resample=Image.Resampling.BILINEAR,
        fillcolor=(128, 128, 128),
    )
    meshes = _mesh(np.asarray(crop))

    # 4. Landmarks back into photo pixels; fall back to the whole photo.
    if meshes:
        m = meshes[0]
        points = np.stack([x0 + m[:, 0] * side, y0 + m[:, 1] * side], axis=1)
        depth = m[:, 2] * side
    else:
        candidates = _mesh(rgb, max_faces=4)
        best = None
        for m in candidates:
            xy = m[:, :2] * [w, h]
            inside = np.mean(
                (xy[:, 0] > box[0]) & (xy[:, 0] < box[2]) & (xy[:, 1] > box[1]) & (xy[:, 1] < box[3])
            )
            if inside > 0.3 and (best is None or inside > best[0]):
                best = (inside, m)
        if best is None:
            raise NoFaceError(
                "a face was detected but its features could not be located; use a photo where the face looks "
                "at the camera and is not covered",
                "no_face",
            )
        points = best[1][:, :2] * [w, h]
        depth = best[1][:, 2] * w
    lm_box = (*points.min(axis=0), *points.max(axis=0))
    return FaceLandmarks(
        points=points,
        depth=depth,
        box=tuple(float(v) for v in lm_box),
        score=float(score),
        faces_found=len(boxes),
        warnings=tuple(warnings),
    )
