"""Prompt parsing: synonyms, negation, conflicts, unknown words, and round trips with describe()."""

import numpy as np
import pytest

from core.avatar.vocab.attributes import describe, sample_attributes
from core.avatar.vocab.prompt import parse_prompt

OPTIONAL_NONE = ("beard", "moustache", "glasses", "headwear")


def _mentioned(attrs) -> dict:
    """What describe() says about attrs: 'none' accessories and hidden colours go unmentioned."""
    d = attrs.to_dict()
    if attrs.hair_style == "bald":
        d.pop("hair_color")
    if attrs.headwear == "none":
        d.pop("headwear_color")
    return {k: v for k, v in d.items() if not (k in OPTIONAL_NONE and v == "none")}


def test_round_trip_templates_and_paraphrases():
    rng = np.random.default_rng(0)
    for i in range(600):
        attrs = sample_attributes(rng)
        text = describe(attrs, rng if i % 2 else None)
        parsed = parse_prompt(text)
        assert parsed.attributes == _mentioned(attrs), text
        assert parsed.unknown_words == [] and parsed.conflicts == [] and parsed.notes == [], text


def test_synonyms():
    p = parse_prompt("an elderly gentleman with a ginger beard and spectacles")
    assert p.attributes == {
        "age": "elderly",
        "presentation": "masculine",
        "hair_color": "red",
        "beard": "full",
        "glasses": "round",
    }
    p = parse_prompt("teen with a blond pony tail, gray eyes and a navy hooded sweatshirt")
    assert p.attributes == {
        "age": "young", "hair_color": "blonde", "hair_style": "ponytail", "eye_color": "grey",
        "clothing": "hoodie", "clothing_color": "blue",
    }  # fmt: skip
    assert parse_prompt("rectangular specs").attributes == {"glasses": "square"}


def test_colour_binds_to_its_noun():
    p = parse_prompt("red hair, a blue cap and a green t-shirt")
    assert p.attributes["hair_color"] == "red"
    assert p.attributes["headwear_color"] == "blue"
    assert p.attributes["clothing_color"] == "green"
    assert parse_prompt("a long face").attributes == {"head_shape": "long"}
    assert parse_prompt("long hair").attributes == {"hair_style": "long"}


def test_negation():
    p = parse_prompt("no glasses, without a hat, clean-shaven, no hair")
    assert p.attributes == {
        "glasses": "none", "headwear": "none", "beard": "none", "moustache": "none", "hair_style": "bald",
    }  # fmt: skip


def test_contradiction_is_resolved_and_reported():
    p = parse_prompt("bald with long hair")
    assert p.attributes == {"hair_style": "long"}
    assert p.conflicts == ["hair_style: 'bald' and 'long' both mentioned; using 'long'"]


def test_unknown_and_ambiguous_words_are_reported():
    p = parse_prompt("a zorgon with purple tentacles")
    assert p.unknown_words == ["zorgon", "tentacles"]
    assert "purple" in " ".join(p.notes) or p.attributes == {"clothing_color": "purple"}
    p = parse_prompt("something red")
    assert p.attributes == {}
    assert p.notes and "red" in p.notes[0] and "hair" in p.notes[0]
    p = parse_prompt("a brown shirt")  # there is no brown clothing in the vocabulary
    assert "clothing_color" not in p.attributes
    assert any("brown" in n for n in p.notes)


def test_empty_prompt_says_nothing():
    p = parse_prompt("   ")
    assert p.attributes == {} and p.unknown_words == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a young woman with long ginger hair", {"presentation": "feminine", "age": "young"}),
        ("she has a bob", {"presentation": "feminine", "hair_style": "bob"}),
        ("a guy in his thirties", {"presentation": "masculine"}),
        ("grandma in a beanie", {"presentation": "feminine", "age": "elderly", "headwear": "beanie"}),
        ("a grandpa", {"presentation": "masculine", "age": "elderly"}),
        ("a girl", {"presentation": "feminine", "age": "young"}),
        ("a boy", {"presentation": "masculine", "age": "young"}),
        ("a lady with her hair in a bun", {"presentation": "feminine", "hair_style": "bun"}),
        ("a gentleman", {"presentation": "masculine"}),
        ("a ponytailed man", {"presentation": "masculine", "hair_style": "ponytail"}),
        ("a bespectacled woman", {"presentation": "feminine", "glasses": "round"}),
        ("a clean-shaven man", {"presentation": "masculine", "beard": "none", "moustache": "none"}),
        ("a grey-haired lady", {"presentation": "feminine", "hair_color": "grey"}),
    ],
)
def test_presentation_and_compound_words(text, expected):
    got = parse_prompt(text).attributes
    assert {k: got.get(k) for k in expected} == expected, got


def test_presentation_words_are_never_dropped_silently():
    # the words that carry presentation are read, not stopwords
    from core.avatar.vocab.prompt import FEMININE_WORDS, MASCULINE_WORDS, STOPWORDS

    assert not (set(FEMININE_WORDS) | set(MASCULINE_WORDS)) & STOPWORDS
    assert parse_prompt("a man").unknown_words == [] and parse_prompt("a woman").unknown_words == []


def test_bearded_woman_is_allowed_and_says_so():
    p = parse_prompt("a bearded woman with a moustache")
    assert p.attributes["presentation"] == "feminine" and p.attributes["beard"] == "full"
    assert p.attributes["moustache"] == "moustache"
    assert any("feminine" in n and "as asked" in n for n in p.notes)


def test_conflicting_presentation_is_reported():
    p = parse_prompt("a man, no, a woman")
    assert p.attributes["presentation"] == "feminine"
    assert any(c.startswith("presentation") for c in p.conflicts)
