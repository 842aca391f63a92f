"""Landmarks of any avatar field: eye centres, mouth corners, chin, jaw hinges, neck base, head top.

An engine avatar (``AvatarField``) knows its landmarks exactly. A generated avatar (a
``TriplaneField``) does not, so they are fitted on its decoded surface: the engine's head model
for the avatar's attributes is fitted to the surface points by Gauss-Newton over the
proportions the engine jitters per seed (head radii, jaw width, nose, ears, hair thickness),
and the fitted engine's landmarks are the avatar's. Only the field's surface is used, not its
part labels, so it works on decoders with part logits and on the older ones without.

``bench/avatar_landmarks.py`` measures the error against the exact landmarks of held-out
engine avatars.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import numpy as np

from core.avatar.procedural.engine import AvatarField
from core.avatar.vocab.attributes import AvatarAttributes
from core.avatar.vocab.parts import LANDMARK_PARTS

LANDMARK_NAMES: tuple[str, ...] = tuple(LANDMARK_PARTS)
"""eye_l, eye_r, mouth_l, mouth_r, chin, jaw_l, jaw_r, neck_base, head_top (metres, world space)."""

FIT_POINTS = 1500
"""Surface points the fit reads (a fixed-seed subset of those given)."""
FIT_ITERATIONS = 6
HUBER_M = 0.002
"""Residuals (signed distance of a target point to the fitted surface) beyond 2 mm count linearly,
so a region the engine cannot make (an odd decoder artefact) does not drag the whole fit."""
LOWEST_Z = -0.12
"""Only points above this height (the neck and the head) are fitted: the torso holds no landmark."""

# Proportions fitted, as (field name, index or None); each bounded to +-25 % of its start.
_PARAMS: tuple[tuple[str, int | None], ...] = (
    ("head_radii", 0),
    ("head_radii", 1),
    ("head_radii", 2),
    ("jaw_half", 0),
    ("nose_scale", None),
    ("ear_scale", None),
    ("hair_gain", None),
)


@dataclass
class LandmarkEstimate:
    """Landmarks of one avatar and how they were found.

    Attributes:
        points: {name: (3,) float32} in metres, Kiln world space (Z up, face towards -Y).
        method: "engine" (the field's exact landmarks) or "fit" (fitted on the surface).
        eye_radius: eyeball radius in metres (for the rig's eye bones and blinks).
        residual_mm: RMS distance of the fitted points to the fitted surface (fits only).
        seconds: time taken.
    """

    points: dict[str, np.ndarray]
    method: str
    eye_radius: float
    residual_mm: float | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "method": self.method,
            "eye_radius_m": round(float(self.eye_radius), 5),
            "residual_mm": None if self.residual_mm is None else round(float(self.residual_mm), 3),
            "seconds": round(float(self.seconds), 3),
            "points": {k: [round(float(c), 5) for c in v] for k, v in self.points.items()},
            "notes": list(self.notes),
        }


def _with_proportions(base: AvatarField, props) -> AvatarField:
    """A copy of the engine avatar ``base`` with other proportions (the seed's jitter replaced)."""
    f = copy.copy(base)
    f.__dict__.pop("_landmarks", None)  # the cached landmarks belong to the old proportions
    f.p = props
    H, R = props.head_center, props.head_radii
    # as AvatarField.__init__ derives them from the proportions
    f.eye_centres = [H + [s * 0.031, -R[1] + 0.0105, 0.02] for s in (1, -1)]
    f.brow_y = [f._front_y(s * 0.032, 0.047) - props.brow_ridge for s in (1, -1)]
    f.mouth_y = f._front_y(0.0, -0.052 - props.sag)
    return f


def _get(props, name: str, index: int | None) -> float:
    value = getattr(props, name)
    return float(value if index is None else value[index])


def _set(props, values: np.ndarray):
    changes: dict = {}
    for (name, index), v in zip(_PARAMS, values, strict=True):
        if index is None:
            changes[name] = float(v)
        else:
            arr = np.array(changes.get(name, getattr(props, name)), np.float64)
            arr[index] = v
            changes[name] = arr
    return dataclasses.replace(props, **changes)


def fit_engine(
    surface: np.ndarray,
    attrs: AvatarAttributes | None = None,
    iterations: int = FIT_ITERATIONS,
    points: int = FIT_POINTS,
) -> tuple[AvatarField, float]:
    """The engine avatar of ``attrs`` whose surface best fits ``surface`` (N, 3) points.

    Levenberg-Marquardt on Huber-weighted signed distances, forward-difference Jacobian over
    ``_PARAMS``. Returns the fitted field and the RMS residual in mm.
    """
    attrs = attrs or AvatarAttributes()
    pts = np.asarray(surface, np.float32).reshape(-1, 3)
    pts = pts[pts[:, 2] > LOWEST_Z]
    if len(pts) < 50:
        raise ValueError(f"only {len(pts)} surface points above the shoulders; nothing to fit landmarks to")
    if len(pts) > points:
        pts = pts[np.random.default_rng(0).choice(len(pts), points, replace=False)]
    base = AvatarField(attrs, seed=0)
    start = np.array([_get(base.p, n, i) for n, i in _PARAMS])
    lo, hi = 0.75 * start, 1.25 * start
    x = start.copy()

    def residual(v: np.ndarray) -> np.ndarray:
        return _with_proportions(base, _set(base.p, v)).value(pts).astype(np.float64)

    r = residual(x)
    lam = 1e-3
    steps = 1e-3 * start
    for _ in range(iterations):
        w = np.where(np.abs(r) <= HUBER_M, 1.0, HUBER_M / np.maximum(np.abs(r), 1e-12))
        J = np.empty((len(pts), len(x)))
        for k in range(len(x)):
            xk = x.copy()
            xk[k] += steps[k]
            J[:, k] = (residual(xk) - r) / steps[k]
        JW = J * w[:, None]
        A, g = JW.T @ J, JW.T @ r
        A_diag = np.diag(np.diag(A) + 1e-12)
        improved = False
        for _ in range(3):
            dx = np.linalg.solve(A + lam * A_diag, -g)
            x_new = np.clip(x + dx, lo, hi)
            r_new = residual(x_new)
            if _huber(r_new) < _huber(r):
                x, r, lam, improved = x_new, r_new, lam * 0.3, True
                break
            lam *= 10
        if not improved or np.max(np.abs(dx) / start) < 1e-4:
            break
    fitted = _with_proportions(base, _set(base.p, x))
    return fitted, float(np.sqrt(np.mean(r**2)) * 1000)


def _huber(r: np.ndarray) -> float:
    a = np.abs(r)
    return float(np.sum(np.where(a <= HUBER_M, 0.5 * a**2, HUBER_M * (a - 0.5 * HUBER_M))))


def estimate_landmarks(
    field, surface: np.ndarray | None = None, attrs: AvatarAttributes | dict | None = None
) -> LandmarkEstimate:
    """Landmarks of an avatar field.

    Args:
        field: an ``AvatarField`` (exact landmarks) or any SDF avatar field in the engine's frame.
        surface: (N, 3) points on the field's surface (e.g. the extracted mesh's vertices); needed
            unless the field has exact landmarks.
        attrs: the attributes the avatar was made with (a dict or ``AvatarAttributes``); the
            engine's defaults when unknown, which fits less well.
    """
    import time

    t = time.perf_counter()
    if isinstance(field, AvatarField):
        return LandmarkEstimate(
            field.landmarks(), "engine", float(field.p.eye_radius), seconds=time.perf_counter() - t
        )
    if surface is None:
        raise ValueError("a field without exact landmarks needs its surface points to fit them on")
    notes = []
    if isinstance(attrs, dict):
        known = {f.name for f in dataclasses.fields(AvatarAttributes)}
        attrs = AvatarAttributes(**{k: v for k, v in attrs.items() if k in known})
    if attrs is None:
        notes.append("attributes unknown: fitted with the engine's default attributes")
    fitted, rms = fit_engine(surface, attrs)
    return LandmarkEstimate(
        fitted.landmarks(),
        "fit",
        float(fitted.p.eye_radius),
        residual_mm=rms,
        seconds=time.perf_counter() - t,
        notes=notes,
    )
