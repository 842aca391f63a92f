"""Attribute dropdowns from the server's vocabulary, pinning, and Variant, against a real server
running the real avatar engine (the installed extension, in the bpy module)."""

from __future__ import annotations

import json

import pytest

from tests.blender.bpy_harness import http_json, requires_bpy, run_bpy
from tests.blender.test_blender_operators import PRELUDE, extension_zip  # noqa: F401 (fixture)

pytestmark = requires_bpy


def full_set(record: dict) -> dict:
    return {**record["drawn"], **record["attributes"]}


def test_dropdowns_pins_and_a_variant_that_changes_one_thing(extension_zip, kiln_server, tmp_path):  # noqa: F811
    if "avatar" not in kiln_server.kinds():
        pytest.skip("the avatar engine is not installed on this server")
    vocab = http_json(kiln_server.url + "/v1/info", 5.0)["attributes"]
    run = run_bpy(
        PRELUDE
        + f"""
import json

def record(item):
    return json.loads(Path(item.attributes_path).read_text())

def main():
    prefs, runtime = install({str(extension_zip)!r}, {kiln_server.url!r}, {str(tmp_path / "out")!r})
    props = sys.modules[MOD + ".blender_addon.properties"]
    s = bpy.context.scene.kiln
    s.mode, s.prompt, s.use_random_seed, s.seed = "AVATAR", "an elderly man with a grey beard", False, 11
    s.resolution, s.texture_size = 64, "256"
    before = len(s.pins)
    refreshed = call(bpy.ops.kiln.refresh_attributes)
    items = {{p.key: [i[0] for i in props._pin_items(p, bpy.context)] for p in s.pins}}
    glasses = next(p for p in s.pins if p.key == "glasses")
    glasses.value = "round"  # the artist picks it in the dropdown
    body = s.to_request().to_dict()
    made = call(bpy.ops.kiln.generate)
    first = s.jobs[-1]
    one = record(first)
    original = bpy.data.objects[first.object_name]
    # Pin what the seed drew, from the finished job's list.
    drawn_key = sorted(one["drawn"])[0]
    pinned = call(bpy.ops.kiln.pin_attribute, key=drawn_key, value=one["drawn"][drawn_key])
    pinned_value = next(p for p in s.pins if p.key == drawn_key).pinned
    # Variant: the same avatar with another hair colour.
    new_colour = next(v for v in props.vocabulary(s)["hair_color"] if v != {{**one["drawn"], **one["attributes"]}}["hair_color"])
    bpy.ops.object.select_all(action="DESELECT")
    bpy.context.view_layer.objects.active = original
    s.variant_attribute = "hair_color"
    s.variant_pin.value = new_colour
    varied = call(bpy.ops.kiln.variant)
    second = s.jobs[-1]
    variant = bpy.data.objects[second.object_name]
    # Nothing to change is refused with what to do.
    s.variant_attribute = "__none__"
    s.variant_prompt = ""
    refused = call(bpy.ops.kiln.variant)
    return {{
        "before": before, "refreshed": refreshed, "items": items, "body": body, "made": made,
        "one": one, "two": record(second), "pinned": pinned, "pinned_value": [drawn_key, pinned_value],
        "drawn": one["drawn"][drawn_key], "new_colour": new_colour, "varied": varied,
        "names": [original.name, variant.name, second.prompt],
        "x": [original.matrix_world.translation.x, variant.matrix_world.translation.x],
        "links": [variant.get("kiln_variant_of"), list(original.get("kiln_variants", []))],
        "refused": refused,
    }}
""",
        tmp_path,
    )
    d = run.data
    assert d["before"] == 0 and d["refreshed"] == [["FINISHED"], ""]
    # One dropdown per attribute of the server, each "from prompt" plus the server's values.
    assert set(d["items"]) == set(vocab)
    for name, values in vocab.items():
        assert d["items"][name] == ["__prompt__", *values], name
    # The pinned value reaches the request and comes back in attributes.json as "request".
    assert d["body"]["attributes"] == {"glasses": "round"}
    assert d["made"] == [["FINISHED"], ""]
    assert d["one"]["attributes"]["glasses"] == "round" and d["one"]["sources"]["glasses"] == "request"
    assert d["one"]["sources"]["beard"] == "prompt"
    assert d["pinned"][0] == ["FINISHED"] and d["pinned_value"][1] == d["drawn"]
    # The variant: same seed, every attribute kept but hair colour.
    assert d["varied"] == [["FINISHED"], ""], d["varied"]
    one, two = full_set(d["one"]), full_set(d["two"])
    assert d["two"]["seed"] == d["one"]["seed"] == 11
    assert two["hair_color"] == d["new_colour"] != one["hair_color"]
    assert {k: v for k, v in two.items() if k != "hair_color"} == {
        k: v for k, v in one.items() if k != "hair_color"
    }
    assert d["two"]["sources"]["hair_color"] == "request" and d["two"]["sources"]["beard"] == "base"
    # Placed beside the original, named after the change, linked both ways.
    original, variant, label = d["names"]
    assert label == f"{original} (hair color {d['new_colour']})" and variant.startswith(label[:20])
    assert d["x"][1] > d["x"][0] + 0.1
    assert d["links"] == [original, [variant]]
    assert d["refused"][0] == ["CANCELLED"] and "choose what to change" in d["refused"][1]
    json.dumps(d)  # the record is plain data
