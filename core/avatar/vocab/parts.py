"""The parts an avatar is made of, the material slots they go to, and the landmarks on them."""

from __future__ import annotations

PART_NAMES: tuple[str, ...] = (
    "skin", "lips", "brows", "eyes", "hair", "beard", "moustache", "glasses", "hat", "cloth",
)  # fmt: skip
"""Every part an avatar can have, in a fixed order (the decoder's part classes index into it)."""

MATERIALS: tuple[str, ...] = ("skin", "eyes", "hair", "glasses", "cloth", "hat")
"""The material slots an artist gets in the GLB, in a fixed order."""

MATERIAL_OF: dict[str, str] = {
    "skin": "skin", "lips": "skin", "brows": "hair", "eyes": "eyes", "hair": "hair",
    "beard": "hair", "moustache": "hair", "glasses": "glasses", "hat": "hat", "cloth": "cloth",
}  # fmt: skip
"""Part -> material slot: brows and facial hair share the hair's material, lips the skin's."""

LANDMARK_PARTS: dict[str, str] = {
    "eye_l": "eyes", "eye_r": "eyes", "mouth_l": "lips", "mouth_r": "lips", "chin": "skin",
    "jaw_l": "skin", "jaw_r": "skin", "neck_base": "skin", "head_top": "skin",
}  # fmt: skip
"""Each landmark and the part it lies on or in. Left (``_l``) is the avatar's own left, +X
(the avatar faces -Y, as Blender characters do)."""


def material_lut() -> list[int]:
    """For each of ``PART_NAMES``, the index of its material in ``MATERIALS``."""
    return [MATERIALS.index(MATERIAL_OF[n]) for n in PART_NAMES]
