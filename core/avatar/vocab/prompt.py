"""Free text -> avatar attributes, with synonyms, negation, and a report of what was not understood.

The parser is a small lexicon, not a language model: colour and shape words wait for the
noun they describe ("red" + "hair" -> hair_color=red, "red" + "cap" -> headwear_color=red),
nouns may set attributes themselves ("ponytail", "goatee"), and "no"/"without" negate the
next noun ("no glasses" -> glasses=none, "no hair" -> bald).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from core.avatar.vocab.attributes import VOCAB

# A category is what a noun is about; modifiers mean different attributes per category.
HAIR, FACE, JAW, EYES, SKIN, BEARD, MOUSTACHE, GLASSES, HAT, CLOTHES = (
    "hair", "face", "jaw", "eyes", "skin", "beard", "moustache", "glasses", "hat", "clothes",
)  # fmt: skip

# Negating a noun of this category sets this attribute value.
_NEGATED = {
    HAIR: ("hair_style", "bald"),
    BEARD: ("beard", "none"),
    MOUSTACHE: ("moustache", "none"),
    GLASSES: ("glasses", "none"),
    HAT: ("headwear", "none"),
}


@dataclass(frozen=True)
class Noun:
    category: str
    sets: tuple[tuple[str, str], ...] = ()
    defaults: tuple[tuple[str, str], ...] = ()
    """Values used unless a modifier says otherwise ("glasses" -> round, "square glasses" -> square)."""


@dataclass(frozen=True)
class Modifier:
    meanings: dict[str, tuple[str, str]]  # category -> (attribute, value)


@dataclass(frozen=True)
class Assign:
    sets: tuple[tuple[str, str], ...]


def _colour(hair=None, eyes=None, skin=None, clothes=None, hat=None) -> Modifier:
    m: dict[str, tuple[str, str]] = {}
    for cat, attr, value in (
        (HAIR, "hair_color", hair),
        (BEARD, "hair_color", hair),
        (MOUSTACHE, "hair_color", hair),
        (EYES, "eye_color", eyes),
        (SKIN, "skin_tone", skin),
        (CLOTHES, "clothing_color", clothes),
        (HAT, "headwear_color", hat),
    ):
        if value is not None:
            m[cat] = (attr, value)
    return Modifier(m)


def _build_lexicon() -> dict[tuple[str, ...], Noun | Modifier | Assign]:
    lex: dict[tuple[str, ...], Noun | Modifier | Assign] = {}

    def add(phrase: str, entry: Noun | Modifier | Assign) -> None:
        lex[tuple(phrase.split())] = entry

    # Colours.
    add("black", _colour(hair="black", skin="dark", clothes="black", hat="black"))
    add("brown", _colour(hair="brown", eyes="brown", skin="brown"))
    add("deep brown", _colour(hair="brown", eyes="brown", skin="dark"))
    add("dark", _colour(hair="black", eyes="brown", skin="dark"))
    add("light", _colour(hair="blonde", skin="light"))
    add("fair", _colour(hair="blonde", skin="light"))
    add("very fair", _colour(skin="very_light"))
    add("very light", _colour(skin="very_light"))
    add("very pale", _colour(skin="very_light"))
    add("pale", _colour(skin="very_light"))
    add("medium", _colour(skin="medium"))
    add("olive", _colour(skin="medium", clothes="green", hat="green"))
    for w in ("tan", "tanned", "sun tanned"):
        add(w, _colour(skin="tan"))
    add("white", _colour(hair="white", skin="very_light", clothes="white", hat="white"))
    add("snow white", _colour(hair="white", clothes="white", hat="white"))
    for w in ("grey", "gray", "silver", "greying", "graying"):
        add(w, _colour(hair="grey", eyes="grey", clothes="grey", hat="grey"))
    for w in ("blonde", "blond", "golden", "platinum", "fair haired"):
        add(w, _colour(hair="blonde"))
    add("red", _colour(hair="red", clothes="red", hat="red"))
    for w in ("ginger", "auburn", "redheaded", "copper"):
        add(w, _colour(hair="red"))
    add("brunette", _colour(hair="brown"))
    add("blue", _colour(hair="blue", eyes="blue", clothes="blue", hat="blue"))
    add("navy", _colour(clothes="blue", hat="blue"))
    add("green", _colour(eyes="green", clothes="green", hat="green"))
    add("emerald", _colour(eyes="green", clothes="green", hat="green"))
    add("hazel", _colour(eyes="brown"))
    add("pink", _colour(hair="pink"))
    add("yellow", _colour(clothes="yellow", hat="yellow"))
    for w in ("purple", "violet", "lilac"):
        add(w, _colour(clothes="purple"))
    add("orange", _colour(hat="orange"))

    # Hair.
    for w in ("hair", "haired", "locks", "hairdo", "hairstyle", "haircut"):
        add(w, Noun(HAIR))
    for w in ("bob", "bob cut", "bobbed"):
        add(w, Noun(HAIR, (("hair_style", "bob"),)))
    for w in ("ponytail", "pony tail", "ponytailed", "pigtails"):
        add(w, Noun(HAIR, (("hair_style", "ponytail"),)))
    for w in ("bun", "top knot", "topknot", "chignon", "bunned"):
        add(w, Noun(HAIR, (("hair_style", "bun"),)))
    for w in ("curls", "afro", "ringlets", "curlyhaired"):
        add(w, Noun(HAIR, (("hair_style", "curly"),)))
    for w in ("buzz cut", "buzzcut", "crew cut", "buzz"):
        add(w, Noun(HAIR, (("hair_style", "buzz"),)))
    add("redhead", Noun(HAIR, (("hair_color", "red"),)))
    for w in ("bald", "hairless", "shaved head", "bald headed"):
        add(w, Assign((("hair_style", "bald"),)))
    add("short", Modifier({HAIR: ("hair_style", "short"), BEARD: ("beard", "stubble")}))
    add("cropped", Modifier({HAIR: ("hair_style", "short")}))
    add(
        "long",
        Modifier({HAIR: ("hair_style", "long"), FACE: ("head_shape", "long"), BEARD: ("beard", "full")}),
    )
    add("flowing", Modifier({HAIR: ("hair_style", "long")}))
    for w in ("curly", "wavy", "frizzy", "curled"):
        add(w, Modifier({HAIR: ("hair_style", "curly")}))
    add("shaved", Modifier({HAIR: ("hair_style", "buzz")}))
    add("buzz cut", Noun(HAIR, (("hair_style", "buzz"),)))

    # Face and jaw.
    for w in ("face", "faced", "head", "headed", "features"):
        add(w, Noun(FACE))
    for w in ("jaw", "jawline", "jawed", "chin"):
        add(w, Noun(JAW))
    for w in ("round", "chubby", "circular", "plump"):
        add(w, Modifier({FACE: ("head_shape", "round"), JAW: ("jaw", "soft"), GLASSES: ("glasses", "round")}))
    for w in ("narrow", "thin", "slim", "elongated"):
        add(w, Modifier({FACE: ("head_shape", "long"), JAW: ("jaw", "soft")}))
    add("oval", Modifier({FACE: ("head_shape", "oval")}))
    for w in ("square", "broad", "wide", "boxy"):
        add(
            w,
            Modifier(
                {FACE: ("head_shape", "square"), JAW: ("jaw", "strong"), GLASSES: ("glasses", "square")}
            ),
        )
    for w in ("rectangular", "square framed", "angular"):
        add(
            w,
            Modifier(
                {GLASSES: ("glasses", "square"), JAW: ("jaw", "strong"), FACE: ("head_shape", "square")}
            ),
        )
    for w in ("strong", "chiselled", "chiseled", "chiselled", "prominent", "defined", "sharp", "heavy"):
        add(w, Modifier({JAW: ("jaw", "strong")}))
    for w in ("soft", "gentle", "weak", "delicate", "rounded"):
        add(w, Modifier({JAW: ("jaw", "soft")}))

    # Eyes and skin.
    for w in ("eyes", "eyed", "eye", "irises"):
        add(w, Noun(EYES))
    for w in ("skin", "skinned", "complexion", "skin tone"):
        add(w, Noun(SKIN))

    # Facial hair.
    for w in ("beard", "bearded"):
        add(w, Noun(BEARD, defaults=(("beard", "full"),)))
    add("goatee", Noun(BEARD, (("beard", "goatee"),)))
    for w in ("stubble", "stubbly", "five o clock shadow", "unshaven"):
        add(w, Noun(BEARD, (("beard", "stubble"),)))
    for w in ("clean shaven", "cleanshaven", "beardless", "shaven", "smooth shaven"):
        add(w, Assign((("beard", "none"), ("moustache", "none"))))
    for w in ("full", "thick", "bushy", "big"):
        add(w, Modifier({BEARD: ("beard", "full"), HAIR: ("hair_style", "curly")}))
    for w in ("moustache", "mustache", "moustached", "mustached", "moustachioed", "mustachioed", "tache"):
        add(w, Noun(MOUSTACHE, (("moustache", "moustache"),)))

    # Glasses, hats, clothes.
    for w in ("glasses", "spectacles", "specs", "eyeglasses", "bespectacled", "spectacled", "frames"):
        add(w, Noun(GLASSES, defaults=(("glasses", "round"),)))
    for w in ("cap", "baseball cap", "ball cap"):
        add(w, Noun(HAT, (("headwear", "cap"),)))
    add("hat", Noun(HAT, defaults=(("headwear", "cap"),)))
    for w in ("beanie", "knit hat", "woolly hat", "wooly hat", "toque", "bobble hat"):
        add(w, Noun(HAT, (("headwear", "beanie"),)))
    for w in ("tshirt", "tee", "t shirt", "tee shirt"):
        add(w, Noun(CLOTHES, (("clothing", "tshirt"),)))
    for w in ("hoodie", "hooded sweatshirt", "hoody", "sweatshirt", "hooded top"):
        add(w, Noun(CLOTHES, (("clothing", "hoodie"),)))
    for w in ("shirt", "collared shirt", "button up shirt", "button down shirt", "dress shirt", "button up"):
        add(w, Noun(CLOTHES, (("clothing", "collared_shirt"),)))
    for w in ("turtleneck", "turtle neck", "roll neck", "rollneck", "polo neck"):
        add(w, Noun(CLOTHES, (("clothing", "turtleneck"),)))
    for w in ("sweater", "jumper", "top", "clothes", "clothing", "outfit", "shirt colour", "jacket"):
        add(w, Noun(CLOTHES))

    # Age and presentation. Words that say both ("girl", "grandpa") set both.
    for w in ("young", "youthful", "teenage", "teen", "teenager", "kid", "child", "youth"):
        add(w, Assign((("age", "young"),)))
    for w in ("adult", "middle aged", "grown up", "mature"):
        add(w, Assign((("age", "adult"),)))
    for w in ("old", "elderly", "senior", "aged", "older"):
        add(w, Assign((("age", "elderly"),)))
    masculine, feminine = (("presentation", "masculine"),), (("presentation", "feminine"),)
    for w in MASCULINE_WORDS:
        add(w, Assign(masculine))
    for w in FEMININE_WORDS:
        add(w, Assign(feminine))
    for w in ("boy", "lad", "schoolboy"):
        add(w, Assign((*masculine, ("age", "young"))))
    for w in ("girl", "lass", "schoolgirl"):
        add(w, Assign((*feminine, ("age", "young"))))
    for w in ("grandpa", "grandfather", "granddad", "grandad", "old man"):
        add(w, Assign((*masculine, ("age", "elderly"))))
    for w in ("grandma", "grandmother", "granny", "gran", "old woman", "old lady"):
        add(w, Assign((*feminine, ("age", "elderly"))))
    return lex


MASCULINE_WORDS = (
    "man", "men", "guy", "gentleman", "gent", "male", "masculine", "dude", "bloke", "he", "him",
    "his", "himself", "father", "dad", "husband", "son", "brother", "uncle", "king", "sir", "mr",
)  # fmt: skip
FEMININE_WORDS = (
    "woman", "women", "lady", "gal", "female", "feminine", "she", "her", "hers", "herself",
    "mother", "mum", "mom", "wife", "daughter", "sister", "aunt", "queen", "madam", "mrs", "ms",
)  # fmt: skip

LEXICON = _build_lexicon()
_MAX_PHRASE = max(len(k) for k in LEXICON)
NEGATIONS = {"no", "without", "not", "never", "non", "lacking", "minus"}
STOPWORDS = set(
    [
        "a",
        "an",
        "the",
        "with",
        "and",
        "or",
        "in",
        "of",
        "on",
        "at",
        "to",
        "wearing",
        "wears",
        "wear",
        "has",
        "have",
        "having",
        "who",
        "is",
        "are",
        "their",
        "its",
        "person",
        "character",
        "figure",
        "avatar",
        "someone",
        "somebody",
        "people",
        "human",
        "portrait",
        "bust",
        "dyed",
        "very",
        "pair",
        "some",
        "little",
        "slightly",
        "bit",
        "but",
        "also",
        "dressed",
        "coloured",
        "colored",
        "style",
        "styled",
        "cut",
        "plus",
        "that",
        "this",
        "they",
        "them",
        "it",
        "like",
        "looking",
        "look",
        "kind",
        "sort",
        "tied",
        "up",
        "back",
        "pulled",
        "into",
        "pretty",
        "quite",
        "rather",
        "really",
        "nice",
        "cool",
        "cute",
        "handsome",
        "beautiful",
        "make",
        "me",
        "generate",
        "create",
        "render",
        "3d",
        "model",
    ]
)


@dataclass
class ParsedPrompt:
    """What a prompt says about an avatar.

    Attributes:
        attributes: attribute -> value for everything the prompt determines.
        unknown_words: words the parser did not understand (shown to the artist).
        conflicts: contradictions and how each was resolved (the later mention wins).
        notes: other remarks, e.g. a colour word that did not say what it colours.
    """

    attributes: dict[str, str] = field(default_factory=dict)
    unknown_words: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _tokens(text: str) -> list[str]:
    text = text.lower().replace("t-shirt", "tshirt").replace("o'clock", "o clock")
    return re.findall(r"[a-z]+", text)


def parse_prompt(text: str) -> ParsedPrompt:
    """Read avatar attributes out of free text.

    Example:
        >>> parse_prompt("an old man with a ginger beard and round spectacles").attributes
        {'age': 'elderly', 'hair_color': 'red', 'beard': 'full', 'glasses': 'round'}
    """
    out = ParsedPrompt()
    words = _tokens(text)
    pending: list[tuple[str, Modifier]] = []
    negate = False

    def assign(attr: str, value: str) -> None:
        assert value in VOCAB[attr], (attr, value)
        old = out.attributes.get(attr)
        if old is not None and old != value:
            out.conflicts.append(f"{attr}: '{old}' and '{value}' both mentioned; using '{value}'")
        out.attributes[attr] = value

    i = 0
    while i < len(words):
        # 1. Longest phrase in the lexicon starting here.
        for n in range(min(_MAX_PHRASE, len(words) - i), 0, -1):
            phrase = tuple(words[i : i + n])
            entry = LEXICON.get(phrase)
            if entry is not None:
                break
        else:
            word = words[i]
            if word in NEGATIONS:
                negate = True
            elif word not in STOPWORDS and word not in out.unknown_words:
                out.unknown_words.append(word)
            i += 1
            continue
        i += n
        text_of = " ".join(phrase)

        # 2. Apply it.
        if isinstance(entry, Modifier):
            pending.append((text_of, entry))
        elif isinstance(entry, Assign):
            if negate and entry.sets[0][0] == "hair_style":
                pass  # "not bald" says nothing about which style
            else:
                for attr, value in entry.sets:
                    assign(attr, value)
            negate = False
        else:
            if negate and entry.category in _NEGATED:
                assign(*_NEGATED[entry.category])
                pending.clear()
            else:
                own = {attr for attr, _ in entry.sets}
                for attr, value in entry.sets:
                    assign(attr, value)
                said = set()
                for word, mod in pending:
                    meaning = mod.meanings.get(entry.category)
                    if meaning is None:
                        out.notes.append(f"'{word}' does not apply to '{text_of}'; ignored")
                    elif meaning[0] not in own:
                        assign(*meaning)
                        said.add(meaning[0])
                for attr, value in entry.defaults:
                    if attr not in said:
                        assign(attr, value)
                pending.clear()
            negate = False

    # 3. Facial hair on a feminine avatar is allowed; say so, since the prior never draws it.
    if out.attributes.get("presentation") == "feminine":
        asked = [a for a in ("beard", "moustache") if out.attributes.get(a, "none") != "none"]
        if asked:
            out.notes.append(
                f"{' and '.join(asked)} on a feminine avatar: drawn as asked (the prior never adds facial hair to one)"
            )

    # 4. Modifiers that never met their noun: keep the unambiguous ones.
    for word, mod in pending:
        targets = {m for m in mod.meanings.values()}
        if len(targets) == 1:
            assign(*next(iter(targets)))
        else:
            cats = ", ".join(sorted(mod.meanings))
            out.notes.append(f"'{word}' is ambiguous here; say what it describes ({cats})")
    return out
