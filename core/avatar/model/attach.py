"""Small facial parts made exactly, fitted to a generated face: eyes, glasses, moustache, beard,
brows, lips.

At 64² the generated tri-planes hold a head, hair and clothes, but not what is a few
millimetres across: the samples' irises, frames and moustaches wash out, and their beards are
blotchy (part read-back of
glasses 0.38-0.62, moustache 0.00, eye colour 0.34 against the engine's 0.71-1.00;
``bench/avatar_parts.py``). The engine knows these parts exactly and where they sit on a face
of given proportions. So a job fits the engine's head to the generated surface (the same fit
the rig's landmarks come from, ``core.avatar.landmarks.fit_engine``) and takes those parts from
the fitted engine: the generated surface is carved around each eye and the exact parts are
added, with their own colours (the asked-for iris, frame, moustache, beard) and part labels.
Everything else (the head's shape, hair, hat, clothes) stays the generator's.

This is how character pipelines build heads anyway (eyeballs and glasses are separate assets on
a sculpted head), and it gives the artist clean material slots to recolour or hide.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from core.avatar.procedural.engine import STUBBLE_SHARE, hat_edge, stubble_area
from core.fields.base import Field

ATTACHED_PARTS: tuple[str, ...] = ("eyes", "glasses", "moustache", "beard", "brows", "lips")
"""Engine parts a generated avatar takes from its fitted engine head (those its attributes have)."""
REPLACED_PARTS: tuple[str, ...] = ("eyes", "glasses", "moustache", "beard")
"""Where the generator labels its own blurred version of these, its surface gives way to the fitted
engine's skin (with its eye sockets and lids): no smeared frame behind the exact one, no stray
moustache or beard when none was asked for."""
STRAY_CLOTH = 0.008
"""Generated surface labelled cloth, or skin below the mouth, within this distance (metres) of an
attached beard is the generator's beard mislabelled (blotches of shirt colour in it) or its chin
standing proud of the fitted one (a streak of skin down the middle of a full beard); it gives
way like the beard. (Skin above the mouth keeps the generator's: the fitted face's cheeks sit at
another depth and would leave a step across the face.)"""
FRINGE_RISE = 0.018
"""Metres above the eye centres of the lowest fringe on the engine's faces (a bob's ends 22 mm
above them). Generated surface in front of the face labelled hair below that, or hat below the
fitted engine's hat edge (``hat_edge``, above the brows), is the generator's blurred fringe or
brim hanging over the brows and eyes (its beanies hid the eyes of every beanie avatar); it gives
way to the fitted engine's skin."""
SOCKET = 0.0015
"""Metres of clearance carved into the generated surface around each eyeball (the socket line)."""
MOUTH_PARTS: tuple[str, ...] = ("lips", "moustache", "beard")
"""Parts placed by the depth of the generated face at the mouth; the rest by its depth at the brows."""
NOSE_RISE = 0.035
"""Metres above the mouth of the nose's base: below it, mouth parts follow the mouth's depth gap."""
MAX_GAP = 0.006
"""Largest depth correction (metres) between the fitted engine face and the generated one."""
FIT_RESOLUTION = 64
"""Marching-cubes grid of the coarse surface the engine head is fitted to (0.1-0.2 s)."""


class AttachedPartsField(Field):
    """A generated avatar (``base``, a ``TriplaneField``) with ``ATTACHED_PARTS`` from ``engine``.

    ``engine`` is the engine avatar fitted to ``base``'s surface (``fit_engine``); its parts are
    exact SDFs, so the union stays Lipschitz with ``base``'s constant. Parts are only evaluated
    inside the box that holds them, so the cost over the generated field is small.
    """

    kind = "sdf"

    def __init__(self, base: Field, engine, fit_rms_mm: float | None = None, seconds: float = 0.0) -> None:
        from core.avatar.vocab.parts import PART_NAMES

        self.base, self.engine = base, engine
        self.fit_rms_mm, self.fit_seconds = fit_rms_mm, seconds
        self.bbox_min, self.bbox_max = base.bbox_min, base.bbox_max
        self.lipschitz = getattr(base, "lipschitz", None)
        self.part_names = getattr(base, "part_names", ())
        probe = engine.parts(np.zeros((1, 3), np.float32))
        self.attached = tuple(p for p in ATTACHED_PARTS if p in probe)
        self._owners = (*self.attached, "skin")
        self._replaced = [PART_NAMES.index(p) for p in REPLACED_PARTS]
        self._cloth = PART_NAMES.index("cloth")
        self._hat, self._hair = PART_NAMES.index("hat"), PART_NAMES.index("hair")
        self._skin = PART_NAMES.index("skin")
        self._stubble = None
        if engine.attrs.beard == "stubble":
            from core.avatar.vocab.palettes import part_colours

            self._stubble = np.asarray(part_colours(engine.attrs)["hair"], np.float32)
        P = engine.p
        H, R = np.asarray(P.head_center, np.float32), np.asarray(P.head_radii, np.float32)
        # Every attached part lies within the head's width (glasses' temples to the ears), from
        # the glasses' plane in front of the face to behind the ears, and from the beard's lower
        # edge to above the brows.
        self._lo = H + np.array([-(R[0] + 0.04), -(R[1] + 0.04), -0.18], np.float32)
        self._hi = H + np.array([R[0] + 0.04, 0.04, 0.08], np.float32)
        # The fit matches the whole head; the generated face can still sit a millimetre or two
        # in front of or behind the engine's around the eyes or at the mouth (a blurred nose and
        # mouth stick out). Parts there move by that depth gap, so a moustache or lips are
        # neither buried in the face nor floating in front of it.
        self._mouth_z = float(H[2] - 0.052 - P.sag)
        # Anchors on bare skin: the cheeks under the eyes and beside the mouth (a hat brim or a
        # fringe can cover the brows, a smeared frame the eyes).
        z_eye = float(H[2]) + 0.02
        self.gap_eyes = self._depth_gap([(s * 0.032, z_eye - 0.025) for s in (1, -1)] + [(0.0, z_eye)])
        self.gap_mouth = self._depth_gap(
            [(0.0, self._mouth_z + 0.008), (0.012, self._mouth_z), (-0.012, self._mouth_z)]
        )
        shift = np.array([0.0, self.gap_eyes, 0.0], np.float32)
        self.eye_centres = [np.asarray(c, np.float32) + shift for c in engine.eye_centres]
        self.eye_radius = float(P.eye_radius)
        self._front_y = float(H[1] - 0.5 * R[1])
        self._head = H
        eye_z = float(np.mean([c[2] for c in self.eye_centres]))
        self._fringe_z = eye_z + FRINGE_RISE
        self._headwear = engine.attrs.headwear

    def _face_front(self, x: np.ndarray) -> np.ndarray:
        """Whether each point is in front of the face (where the engine's side hair never
        reaches) and above the nose (below it, parts follow the mouth's depth gap, and engine
        skin placed by the brows' gap could bury an attached moustache)."""
        return (x[:, 1] < self._front_y) & (x[:, 2] > self._mouth_z + NOSE_RISE)

    def _depth_gap(self, anchors: list[tuple[float, float]]) -> float:
        """Median over (x, z) anchors of (generated face front - engine skin front) along Y
        (metres), from anchors where the generated front is labelled skin or lips."""
        from core.avatar.vocab.parts import PART_NAMES

        skin = [PART_NAMES.index("skin"), PART_NAMES.index("lips")]
        ys = np.arange(-0.25, 0.02, 2.5e-4, dtype=np.float32)
        gaps = []
        for x, z in anchors:
            line = np.stack([np.full_like(ys, x), ys, np.full_like(ys, z)], 1)
            d, _, labels = self._base(line, False)
            b, k = d < 0, self.engine.parts(line)["skin"] < 0
            if not (b.any() and k.any()):
                continue
            front = int(np.argmax(b))
            if labels is not None and labels[front] not in skin:
                continue
            gaps.append(float(ys[front] - ys[np.argmax(k)]))
        return float(np.clip(np.median(gaps), -MAX_GAP, MAX_GAP)) if gaps else 0.0

    # --- evaluation ---------------------------------------------------------------------

    def _near(self, x: np.ndarray) -> np.ndarray:
        return np.all((x >= self._lo) & (x <= self._hi), axis=1)

    def _base(self, x: np.ndarray, need_rgb: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The generated field's SDF, albedo (if asked) and part labels (None without) at x."""
        decode = getattr(self.base, "decode", None)
        if decode is not None:  # a TriplaneField: all three from one pass of the decoder
            d, rgb, labels = decode(x)
            return d, rgb, labels
        fine = getattr(self.base, "fine_parts", None)
        return (
            np.asarray(self.base.value(x), np.float32),
            np.asarray(self.base.albedo(x), np.float32) if need_rgb else None,
            None if fine is None else np.asarray(fine(x), np.int64),
        )

    def _compose(self, x: np.ndarray, need_rgb: bool = False):
        """SDF at x, the generated albedo (if asked) and labels, and which engine part (index
        into ``self._owners``) makes the surface at each point, or -1 where the generated one does."""
        d, rgb, labels = self._base(x, need_rgb)
        d = d.copy()
        owner = np.full(len(x), -1, np.int64)
        near = np.nonzero(self._near(x))[0]
        if not len(near):
            return d, rgb, labels, owner
        xn = x[near]
        parts = self.engine.parts(xn - np.array([0.0, self.gap_eyes, 0.0], np.float32))
        band = xn[:, 2] < self._mouth_z + NOSE_RISE
        mouth = np.nonzero(band)[0]
        for p in MOUTH_PARTS:
            if p in parts:
                parts[p] = np.where(band, parts[p], np.inf).astype(np.float32)
        if len(mouth) and any(p in parts for p in MOUTH_PARTS):
            moved = self.engine.parts(xn[mouth] - np.array([0.0, self.gap_mouth, 0.0], np.float32))
            for p in MOUTH_PARTS:
                if p in parts:
                    parts[p][mouth] = moved[p]
        dn = d[near]
        replaced = np.zeros(len(xn), bool)
        if labels is not None:
            replaced = np.isin(labels[near], self._replaced)
            if "beard" in parts:  # the generator's "clothes", or its chin, poking through the beard
                stray = labels[near] == self._cloth
                stray |= (labels[near] == self._skin) & (xn[:, 2] < self._mouth_z)
                replaced |= stray & (parts["beard"] < STRAY_CLOTH)
            front = self._face_front(xn)
            ln, z = labels[near], xn[:, 2]
            brim = self._head[2] + hat_edge(self._headwear, xn[:, 1] - self._head[1])
            replaced |= front & (ln == self._hat) & (z < brim)
            replaced |= front & (ln == self._hair) & (z < self._fringe_z)
            dn = np.where(replaced, parts["skin"], dn)
        if "eyes" in parts:  # a socket, so the eyeball shows through a face that covers it
            ball = np.min(
                [np.linalg.norm(xn - c, axis=1) - (self.eye_radius + SOCKET) for c in self.eye_centres],
                axis=0,
            )
            dn = np.maximum(dn, -ball)
        own = np.where(replaced, len(self.attached), -1)
        if self.attached:
            stack = np.stack([parts[p] for p in self.attached])
            best = stack.argmin(0)
            dp = stack[best, np.arange(len(xn))]
            wins = dp < dn
            dn = np.where(wins, dp, dn)
            own = np.where(wins, best, own)
        d[near] = dn
        owner[near] = own
        return d, rgb, labels, owner

    def value(self, points: np.ndarray) -> np.ndarray:
        x = np.asarray(points, np.float32).reshape(-1, 3)
        return self._compose(x)[0]

    def _engine_points(self, x: np.ndarray, owner: np.ndarray) -> np.ndarray:
        """Points the engine is asked about for owned points: moved back by their part's depth gap."""
        names = np.array(self._owners)[owner]
        dy = np.where(np.isin(names, MOUTH_PARTS), self.gap_mouth, self.gap_eyes).astype(np.float32)
        return x - dy[:, None] * np.array([0, 1, 0], np.float32)

    def _engine_at_owned(self, points: np.ndarray, need_rgb: bool):
        """``_compose`` at points, plus where the engine makes the surface (``mine``) and the
        points to ask the engine about there (moved back by their part's depth gap)."""
        x = np.asarray(points, np.float32).reshape(-1, 3)
        _, rgb, labels, owner = self._compose(x, need_rgb)
        mine = owner >= 0
        return rgb, labels, mine, self._engine_points(x[mine], owner[mine])

    def albedo(self, points: np.ndarray) -> np.ndarray:
        x = np.asarray(points, np.float32).reshape(-1, 3)
        rgb, labels, mine, at = self._engine_at_owned(x, need_rgb=True)
        rgb = rgb.copy()
        if self._stubble is not None and labels is not None:
            # Stubble is a colour on the jaw and chin, as on the engine's faces (the painted
            # generated skin would lose it).
            on = stubble_area(x - self._head, self.engine.p.sag) & (labels == self._skin) & ~mine
            rgb[on] = (1 - STUBBLE_SHARE) * rgb[on] + STUBBLE_SHARE * self._stubble
        if mine.any():
            rgb[mine] = self.engine.albedo(at)
        return rgb

    def fine_parts(self, points: np.ndarray) -> np.ndarray:
        """Index into ``PART_NAMES`` at each point: the engine's where its parts make the surface
        (an eyeball's top under the engine's lid is skin, as on an engine avatar)."""
        _, labels, mine, at = self._engine_at_owned(points, need_rgb=False)
        if labels is None:
            raise NotImplementedError("the generated field has no part labels")
        labels = labels.copy()
        if mine.any():
            labels[mine] = self.engine.nearest_part(at)
        return labels

    def part_labels(self, points: np.ndarray) -> np.ndarray:
        from core.avatar.vocab.parts import material_lut

        return np.array(material_lut(), np.int64)[self.fine_parts(points)]

    # --- for the rig ------------------------------------------------------------------

    def landmark_estimate(self):
        """The landmarks of the fitted engine head (``LandmarkEstimate``, method "fit")."""
        from core.avatar.landmarks import LandmarkEstimate

        points = self.engine.landmarks()
        for name in ("eye_l", "eye_r"):
            points[name] = points[name] + np.array([0, self.gap_eyes, 0], np.float32)
        for name in ("mouth_l", "mouth_r"):
            points[name] = points[name] + np.array([0, self.gap_mouth, 0], np.float32)
        return LandmarkEstimate(
            points,
            "fit",
            self.eye_radius,
            residual_mm=self.fit_rms_mm,
            seconds=self.fit_seconds,
            notes=[f"parts from the fitted engine head: {', '.join(self.attached) or 'none'}"],
        )


def attach_parts(base: Field, attributes: Mapping[str, str] | None) -> AttachedPartsField:
    """``base`` with the exact small parts of its fitted engine head (see the module doc).

    Raises ValueError when the generated surface has too little head to fit (see ``fit_engine``).
    """
    import dataclasses

    from core.assets.mesh import extract_mesh
    from core.avatar.landmarks import fit_engine
    from core.avatar.vocab.attributes import AvatarAttributes

    t = time.perf_counter()
    known = {f.name for f in dataclasses.fields(AvatarAttributes)}
    attrs = AvatarAttributes(**{k: v for k, v in (attributes or {}).items() if k in known})
    surface = extract_mesh(base, FIT_RESOLUTION).vertices
    engine, rms = fit_engine(surface, attrs)
    return AttachedPartsField(base, engine, rms, time.perf_counter() - t)
