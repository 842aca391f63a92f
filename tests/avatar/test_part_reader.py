"""The part reader of bench/avatar_eval.py reads each attribute from its own parts."""

from __future__ import annotations

import numpy as np
import torch

from bench.avatar_eval import AttributeClassifier
from bench.avatar_parts import EXTRAS, PART_ATTRIBUTES, READ_FROM, focused_columns, part_reading
from core.avatar.procedural.engine import AvatarField
from core.avatar.vocab.attributes import ATTRIBUTE_NAMES, AvatarAttributes, sample_attributes
from core.avatar.vocab.parts import PART_NAMES

torch.set_num_threads(1)
P = len(PART_NAMES)


def share_col(part: str, whole: bool = False) -> int:
    return (4 * P + 3 if whole else 0) + 4 * PART_NAMES.index(part)


def test_the_focused_columns_are_the_named_parts_share_and_colour_in_both_regions():
    cols = set(focused_columns("moustache").tolist())
    for part in READ_FROM["moustache"]:
        for whole in (False, True):
            assert set(range(share_col(part, whole), share_col(part, whole) + 4)) <= cols
    assert share_col("hat") not in cols and share_col("hat", True) not in cols
    assert len(cols) == 8 * len(READ_FROM["moustache"])
    beard = set(focused_columns("beard").tolist())  # and the jaw's and cheeks' skin colours
    assert set(range(8 * P + 3, 8 * P + 9)) <= beard and not set(range(8 * P + 3, 8 * P + 3 + EXTRAS)) & cols
    iris = set(range(4 * P, 4 * P + 3))
    assert iris <= set(focused_columns("eye_color").tolist()) and not iris & cols


def test_the_columns_match_the_descriptor_of_an_engine_avatar():
    base = sample_attributes(np.random.default_rng(3)).to_dict()
    with_m = AvatarAttributes(**{**base, "moustache": "moustache", "beard": "none"})
    without = AvatarAttributes(**{**base, "moustache": "none", "beard": "none"})
    d = [
        part_reading(AvatarField(a, 3), np.random.default_rng(0), 1500, 400, 200)["descriptor"]
        for a in (with_m, without)
    ]
    assert d[0].shape == (8 * P + 3 + EXTRAS,)
    assert d[0][share_col("moustache")] > 0.003 and d[1][share_col("moustache")] == 0.0


def test_a_change_in_an_unrelated_part_does_not_change_what_the_focused_reader_reads():
    rng = np.random.default_rng(0)
    attrs = [sample_attributes(np.random.default_rng([11, i])) for i in range(240)]
    X = rng.normal(0, 1, (len(attrs), 8 * P + 3 + EXTRAS)).astype(np.float32)
    has = np.array([a.moustache != "none" for a in attrs], np.float32)
    X[:, share_col("moustache")] = has * 0.01 + rng.normal(0, 0.002, len(attrs))
    X[:, share_col("hat")] = rng.normal(0, 0.1, len(attrs))
    train, test = slice(0, 180), slice(180, None)
    focused = {name: focused_columns(name) for name in PART_ATTRIBUTES}
    clf = AttributeClassifier(X[train], attrs[train], dims=(8, 16), columns=focused)
    m = ATTRIBUTE_NAMES.index("moustache")
    truth = np.array([a.indices()[m] for a in attrs[test]])
    pred = clf.predict(X[test])[:, m]
    assert (pred == truth).mean() > 0.9
    shifted = X[test].copy()  # every column outside the moustache's parts moves far off
    outside = np.setdiff1d(np.arange(X.shape[1]), focused["moustache"])
    shifted[:, outside] += 25.0
    assert np.array_equal(clf.predict(shifted)[:, m], pred)


def test_stubble_shows_as_the_jaws_skin_colour_against_the_cheeks():
    base = sample_attributes(np.random.default_rng(4)).to_dict()
    base.update(hair_color="black", skin_tone="light", headwear="none")
    read = [
        part_reading(
            AvatarField(AvatarAttributes(**{**base, "beard": b}), 4), np.random.default_rng(0), 2000, 200, 100
        )
        for b in ("none", "stubble")
    ]
    e = [r["descriptor"][8 * P + 3 :] for r in read]
    jaw_drop = [float(x[:3].mean() - x[3:6].mean()) for x in e]  # jaw minus cheeks, grey level
    assert jaw_drop[1] < jaw_drop[0] - 0.05
    assert np.allclose(e[0][3:6], e[1][3:6], atol=0.03)  # the cheeks keep their colour
    assert e[0][12:15].sum() < 0.03 < 0.15 < e[1][12:15].sum()  # |jaw - cheeks| per channel
