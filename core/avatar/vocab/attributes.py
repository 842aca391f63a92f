"""Avatar attributes: the vocabulary, sampling over the space, and prompts written from them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

# Attribute name -> allowed values. Every value changes the avatar's shape or colour
# (tests/avatar/test_engine.py checks that). The order is stable: conditioning
# embeddings index into these tuples, so append new values at the end only.
VOCAB: dict[str, tuple[str, ...]] = {
    "head_shape": ("oval", "round", "long", "square"),
    "jaw": ("soft", "strong"),
    "age": ("young", "adult", "elderly"),
    "skin_tone": ("very_light", "light", "medium", "tan", "brown", "dark"),
    "eye_color": ("brown", "blue", "green", "grey"),
    "hair_style": ("bald", "buzz", "short", "bob", "long", "bun", "ponytail", "curly"),
    "hair_color": ("black", "brown", "blonde", "red", "grey", "white", "blue", "pink"),
    "beard": ("none", "stubble", "goatee", "full"),
    "moustache": ("none", "moustache"),
    "glasses": ("none", "round", "square"),
    "headwear": ("none", "cap", "beanie"),
    "headwear_color": ("black", "white", "red", "blue", "green", "yellow", "grey", "orange"),
    "clothing": ("tshirt", "hoodie", "collared_shirt", "turtleneck"),
    "clothing_color": ("white", "black", "grey", "red", "blue", "green", "yellow", "purple"),
    "presentation": ("masculine", "feminine"),
}

ATTRIBUTE_NAMES: tuple[str, ...] = tuple(VOCAB)

DRAW_ORDER: tuple[str, ...] = (
    "age", "presentation", *(n for n in ATTRIBUTE_NAMES if n not in ("age", "presentation"))
)  # fmt: skip
"""The order attributes are drawn in: presentation right after age, because both shape the hair
and facial-hair priors. Draws are keyed by ``ATTRIBUTE_NAMES`` position, never by this order."""


class AttributeValueError(ValueError):
    """An attribute name or value outside the vocabulary."""


@dataclass(frozen=True)
class AvatarAttributes:
    """A complete avatar description; every field takes a value from ``VOCAB``."""

    head_shape: str = "oval"
    jaw: str = "soft"
    age: str = "adult"
    skin_tone: str = "light"
    eye_color: str = "brown"
    hair_style: str = "short"
    hair_color: str = "brown"
    beard: str = "none"
    moustache: str = "none"
    glasses: str = "none"
    headwear: str = "none"
    headwear_color: str = "black"
    clothing: str = "tshirt"
    clothing_color: str = "grey"
    presentation: str = "masculine"
    """Masculine or feminine: face proportions, hair and facial-hair priors (engine v2)."""

    def __post_init__(self) -> None:
        validate_partial(asdict(self))

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def replace(self, **changes: str) -> AvatarAttributes:
        return replace(self, **changes)

    def indices(self) -> np.ndarray:
        """Index of each value in its vocabulary, in ``ATTRIBUTE_NAMES`` order -> (A,) int64."""
        return np.array([VOCAB[n].index(getattr(self, n)) for n in ATTRIBUTE_NAMES], dtype=np.int64)

    @classmethod
    def from_indices(cls, idx: np.ndarray) -> AvatarAttributes:
        return cls(**{n: VOCAB[n][int(i)] for n, i in zip(ATTRIBUTE_NAMES, idx, strict=True)})


assert tuple(f.name for f in fields(AvatarAttributes)) == ATTRIBUTE_NAMES


def validate_partial(values: dict[str, str]) -> dict[str, str]:
    """Check a (possibly partial) attribute dict; raise with the allowed values if wrong."""
    for name, value in values.items():
        if name not in VOCAB:
            raise AttributeValueError(
                f"unknown avatar attribute {name!r}; known attributes: {', '.join(VOCAB)}"
            )
        if value not in VOCAB[name]:
            raise AttributeValueError(
                f"unknown value {value!r} for avatar attribute {name!r}; use one of: {', '.join(VOCAB[name])}"
            )
    return values


# Sampling priors: mostly uniform, with a few correlations that make avatars plausible
# (grey hair with age, beards mostly with short hair styles). Probabilities need not sum
# to one; they are normalised.
_PRIORS: dict[str, dict[str, float]] = {
    "beard": {"none": 0.55, "stubble": 0.15, "goatee": 0.12, "full": 0.18},
    "moustache": {"none": 0.75, "moustache": 0.25},
    "glasses": {"none": 0.5, "round": 0.25, "square": 0.25},
    "headwear": {"none": 0.6, "cap": 0.2, "beanie": 0.2},
}


def _draw(rng: np.random.Generator, name: str, weights: dict[str, float] | None = None) -> str:
    values = VOCAB[name]
    w = np.array([(weights or {}).get(v, 1.0) for v in values], dtype=np.float64)
    return values[int(rng.choice(len(values), p=w / w.sum()))]


# Hair styles by presentation (unlisted styles weigh 1).
_HAIR_STYLE_PRIOR = {
    "masculine": {"bald": 1.0, "buzz": 1.5, "short": 2.5, "bob": 0.3, "long": 0.5, "bun": 0.4, "ponytail": 0.4},
    "feminine": {"bald": 0.1, "buzz": 0.3, "short": 0.8, "bob": 1.6, "long": 2.2, "bun": 1.4, "ponytail": 1.4},
}  # fmt: skip
NO_FACIAL_HAIR = {"beard": {"none": 1.0, "stubble": 0.0, "goatee": 0.0, "full": 0.0},
                  "moustache": {"none": 1.0, "moustache": 0.0}}  # fmt: skip
"""The facial-hair prior of a feminine avatar: none, unless the prompt asks for it."""


def _weights(name: str, drawn: dict[str, str]) -> dict[str, float]:
    """Prior weights of ``name``'s values given the attributes already drawn.

    Age shapes hair colour and beard; presentation shapes hair style, and a feminine avatar
    never draws facial hair (it gets some only when asked for).
    """
    weights = dict(_PRIORS.get(name, {}))
    presentation = drawn.get("presentation")
    if name in NO_FACIAL_HAIR and presentation == "feminine":
        return dict(NO_FACIAL_HAIR[name])
    if name == "hair_style" and presentation in _HAIR_STYLE_PRIOR:
        return dict(_HAIR_STYLE_PRIOR[presentation])
    if name == "hair_color":
        age = drawn["age"]
        if age == "elderly":
            weights = {"grey": 4.0, "white": 3.0}
        elif age == "young":
            weights = {"grey": 0.2, "white": 0.2}
    if name == "beard" and drawn["age"] == "young":
        weights = {"none": 3.0, "stubble": 1.0, "goatee": 0.5, "full": 0.5}
    return weights


def sample_attributes(rng: np.random.Generator, fixed: dict[str, str] | None = None) -> AvatarAttributes:
    """Draw a random avatar, keeping any ``fixed`` attributes.

    Covers the whole vocabulary: every value of every attribute has non-zero probability.
    """
    fixed = validate_partial(dict(fixed or {}))
    out: dict[str, str] = {}
    for name in DRAW_ORDER:
        if name in fixed:
            out[name] = fixed[name]
            continue
        out[name] = _draw(rng, name, _weights(name, out))
    return AvatarAttributes(**out)


def complete_attributes(fixed: dict[str, str], key: tuple[int, ...]) -> AvatarAttributes:
    """Fill the attributes ``fixed`` leaves open with draws from the training prior, keyed by ``key``.

    Each attribute has its own random number (from ``key`` and its position), turned into a
    value by the prior's inverse CDF, so fixing or changing one attribute never reshuffles the
    others' draws: the same key with one attribute edited keeps the rest (a dependent draw,
    such as hair colour after age, moves only if its prior does).
    """
    fixed = validate_partial(dict(fixed))
    out: dict[str, str] = {}
    for name in DRAW_ORDER:
        a = ATTRIBUTE_NAMES.index(name)
        if name in fixed:
            out[name] = fixed[name]
            continue
        values = VOCAB[name]
        w = _weights(name, out)
        p = np.array([w.get(v, 1.0) for v in values], dtype=np.float64)
        u = np.random.default_rng([*key, a]).random()
        out[name] = values[
            min(int(np.searchsorted(np.cumsum(p / p.sum()), u, side="right")), len(values) - 1)
        ]
    return AvatarAttributes(**out)


# ---------------------------------------------------------------------------------------
# Prompts written from attributes. Each value has several phrasings; the prompt parser
# (core/avatar/vocab/prompt.py) must read all of them back.

_AGE = {
    "young": ["young", "youthful", "teenage"],
    "adult": ["adult", "middle-aged", "grown-up"],
    "elderly": ["elderly", "old", "senior"],
}
_PERSON = {
    "masculine": ["man", "guy", "gentleman", "male character"],
    "feminine": ["woman", "lady", "female character", "woman"],
}
_SKIN = {
    "very_light": ["very pale skin", "very fair skin"],
    "light": ["light skin", "fair skin"],
    "medium": ["medium skin", "olive skin"],
    "tan": ["tanned skin", "tan skin"],
    "brown": ["brown skin"],
    "dark": ["dark skin", "deep brown skin"],
}
_HEAD = {
    "oval": ["an oval face"],
    "round": ["a round face", "a chubby face"],
    "long": ["a long face", "a narrow face"],
    "square": ["a square face", "a broad face"],
}
_JAW = {"soft": ["a soft jaw", "a gentle jawline"], "strong": ["a strong jaw", "a chiselled jawline"]}
_HAIR_COLOR = {
    "black": ["black"],
    "brown": ["brown", "brunette"],
    "blonde": ["blonde", "blond", "golden"],
    "red": ["red", "ginger", "auburn"],
    "grey": ["grey", "gray", "silver"],
    "white": ["white", "snow-white"],
    "blue": ["blue", "dyed blue"],
    "pink": ["pink", "dyed pink"],
}
_HAIR_STYLE = {
    "buzz": ["buzz-cut {c} hair", "a {c} buzz cut", "shaved {c} hair"],
    "short": ["short {c} hair", "cropped {c} hair"],
    "bob": ["a {c} bob", "{c} hair in a bob", "a {c} bob cut"],
    "long": ["long {c} hair", "flowing {c} hair"],
    "bun": ["{c} hair in a bun", "a {c} bun", "a {c} top knot"],
    "ponytail": ["a {c} ponytail", "{c} hair in a ponytail"],
    "curly": ["curly {c} hair", "{c} curls", "an afro of {c} curls"],
}
_EYES = {
    "brown": ["brown eyes", "hazel eyes"],
    "blue": ["blue eyes"],
    "green": ["green eyes"],
    "grey": ["grey eyes", "gray eyes"],
}
_BEARD = {
    "stubble": ["stubble", "a stubbly chin"],
    "goatee": ["a goatee"],
    "full": ["a full beard", "a thick beard", "a bushy beard"],
}
_GLASSES = {
    "round": ["round glasses", "round spectacles"],
    "square": ["square glasses", "rectangular glasses", "square-framed spectacles"],
}
_HEADWEAR = {"cap": ["a {c} cap", "a {c} baseball cap"], "beanie": ["a {c} beanie", "a {c} knit hat"]}
_CLOTHING = {
    "tshirt": ["a {c} t-shirt", "a {c} tee"],
    "hoodie": ["a {c} hoodie", "a {c} hooded sweatshirt"],
    "collared_shirt": ["a {c} collared shirt", "a {c} button-up shirt"],
    "turtleneck": ["a {c} turtleneck", "a {c} roll-neck sweater"],
}
_CLOTH_COLOR = {c: [c] for c in VOCAB["clothing_color"]} | {"grey": ["grey", "gray"]}
_HAT_COLOR = {c: [c] for c in VOCAB["headwear_color"]} | {"grey": ["grey", "gray"]}


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def describe(attrs: AvatarAttributes, rng: np.random.Generator | None = None) -> str:
    """Write a prompt for ``attrs``; with ``rng``, a random paraphrase, else the canonical one.

    Example: "an adult man with light skin, an oval face, a soft jaw, short brown hair,
    brown eyes, round glasses and a grey t-shirt".
    """
    pick = (lambda opts: _pick(rng, opts)) if rng is not None else (lambda opts: opts[0])
    age = pick(_AGE[attrs.age])
    article = "an" if age[0] in "aeiou" else "a"
    parts = [pick(_SKIN[attrs.skin_tone]), pick(_HEAD[attrs.head_shape]), pick(_JAW[attrs.jaw])]
    if attrs.hair_style == "bald":
        parts.append(pick(["a bald head", "no hair"]))
    else:
        parts.append(pick(_HAIR_STYLE[attrs.hair_style]).format(c=pick(_HAIR_COLOR[attrs.hair_color])))
    parts.append(pick(_EYES[attrs.eye_color]))
    if attrs.beard != "none":
        parts.append(pick(_BEARD[attrs.beard]))
    if attrs.moustache != "none":
        parts.append(pick(["a moustache", "a mustache"]))
    if attrs.glasses != "none":
        parts.append(pick(_GLASSES[attrs.glasses]))
    if attrs.headwear != "none":
        parts.append(pick(_HEADWEAR[attrs.headwear]).format(c=pick(_HAT_COLOR[attrs.headwear_color])))
    parts.append(pick(_CLOTHING[attrs.clothing]).format(c=pick(_CLOTH_COLOR[attrs.clothing_color])))
    if rng is not None:
        # Shuffle the middle so the parser cannot rely on order.
        order = rng.permutation(len(parts))
        parts = [parts[i] for i in order]
    return f"{article} {age} {pick(_PERSON[attrs.presentation])} with {_join(parts)}"
