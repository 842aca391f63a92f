"""Linear RGB albedo of each colour attribute value, shared by the engine and the photo readers.

The engine paints with these colours and the photo readers match what they see against the same
ones, so a value read from a photo renders as what was seen.
"""

SKIN = {
    "very_light": (0.96, 0.84, 0.76),
    "light": (0.90, 0.72, 0.60),
    "medium": (0.78, 0.58, 0.43),
    "tan": (0.68, 0.48, 0.32),
    "brown": (0.48, 0.32, 0.21),
    "dark": (0.29, 0.19, 0.13),
}
HAIR = {
    "black": (0.05, 0.045, 0.04),
    "brown": (0.36, 0.21, 0.10),
    "blonde": (0.90, 0.77, 0.45),
    "red": (0.72, 0.26, 0.08),
    "grey": (0.58, 0.58, 0.58),
    "white": (0.93, 0.93, 0.91),
    "blue": (0.15, 0.30, 0.85),
    "pink": (0.95, 0.45, 0.70),
}
IRIS = {
    "brown": (0.33, 0.19, 0.08),
    "blue": (0.22, 0.48, 0.86),
    "green": (0.22, 0.58, 0.28),
    "grey": (0.55, 0.60, 0.63),
}
CLOTH = {
    "white": (0.92, 0.92, 0.90),
    "black": (0.06, 0.06, 0.07),
    "grey": (0.50, 0.50, 0.52),
    "red": (0.80, 0.12, 0.10),
    "blue": (0.12, 0.25, 0.75),
    "green": (0.15, 0.55, 0.20),
    "yellow": (0.95, 0.82, 0.15),
    "purple": (0.48, 0.20, 0.62),
    "orange": (0.95, 0.50, 0.10),
}
FRAME = {"round": (0.62, 0.48, 0.18), "square": (0.06, 0.06, 0.06)}
EYE_WHITE = (0.95, 0.94, 0.92)
PUPIL = (0.02, 0.02, 0.02)


def part_colours(attrs, tint=None) -> dict:
    """The albedo of each part (``vocab.parts.PART_NAMES``) of an avatar with ``attrs``.

    ``tint`` (colour -> colour) jitters the skin, hair, cloth and hat colours, in that order (the
    engine's per-seed tint); without it the palette colours are returned as they are.
    """
    import numpy as np

    tint = tint or (lambda c: np.asarray(c, np.float64))
    skin = tint(SKIN[attrs.skin_tone])
    if attrs.age == "elderly":  # paler, greyer skin
        skin = 0.85 * skin + 0.15 * np.mean(skin)
    hair = tint(HAIR[attrs.hair_color])
    lip = skin * (
        np.array([0.88, 0.5, 0.52]) if attrs.presentation == "feminine" else np.array([0.85, 0.6, 0.58])
    )
    return {
        "skin": skin,
        "lips": lip,
        "brows": hair if attrs.hair_style != "bald" else 0.55 * skin,
        "eyes": EYE_WHITE,
        "cloth": tint(CLOTH[attrs.clothing_color]),
        "hair": hair,
        "beard": hair,
        "moustache": hair,
        "glasses": FRAME.get(attrs.glasses, (0, 0, 0)),
        "hat": tint(CLOTH[attrs.headwear_color]),
    }
