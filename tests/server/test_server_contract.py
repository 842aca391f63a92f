"""The job contract across layers: core defines each default and range once, the server's schema is
generated from it, and the add-on's protocol mirrors it (checked against the OpenAPI schema)."""

from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.pipelines import jobs
from server.__main__ import config_from_args
from server.app import create_app

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from blender_addon import protocol  # noqa: E402


@pytest.fixture(scope="module")
def openapi(tmp_path_factory) -> dict:
    config = config_from_args(["--data", str(tmp_path_factory.mktemp("data"))])
    app = create_app(config)
    return app.openapi()


def _props(openapi: dict, name: str) -> dict:
    return openapi["components"]["schemas"][name]["properties"]


def _bounds(prop: dict) -> tuple:
    # Optional fields are anyOf [number, null]; the limits sit on the number branch.
    branch = next((b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"), prop)
    return (
        branch.get("minimum", branch.get("exclusiveMinimum")),
        branch.get("maximum"),
        branch.get("maxLength", prop.get("maxLength")),
    )


def test_server_schema_has_the_contracts_defaults_and_ranges(openapi):
    for cls, name in ((jobs.OutputOptions, "OutputOptions"), (jobs.JobParams, "JobRequest")):
        props = _props(openapi, name)
        for f in dataclasses.fields(cls):
            if f.name in ("photo_path", "output"):
                continue
            spec = f.metadata
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if f.default_factory is dataclasses.MISSING:  # a factory's {} is not in the schema
                assert props[f.name].get("default") == default, f.name
            lo, hi, length = _bounds(props[f.name])
            assert lo == spec.get("ge", spec.get("gt")), f.name
            assert hi == spec.get("le"), f.name
            assert (length or props[f.name].get("maxProperties")) == spec.get("max_length"), f.name


def test_addon_protocol_mirrors_the_openapi_schema(openapi):
    # Defaults of the add-on's request types are the server's.
    out = _props(openapi, "OutputOptions")
    for f in dataclasses.fields(protocol.OutputOptions):
        assert getattr(protocol.OutputOptions(), f.name) == out[f.name]["default"], f.name
    params = _props(openapi, "JobRequest")
    request = protocol.JobRequest("avatar")
    for name in ("prompt", "negative_prompt", "seed", "preset", "guidance_scale", "variation"):
        assert getattr(request, name) == params[name].get("default"), name
    assert request.attributes == jobs.JobParams().attributes == {}
    assert set(protocol.PRESETS) == set(params["preset"]["enum"])
    assert params["prompt"]["maxLength"] == protocol.PROMPT_MAX_CHARS
    assert set(jobs.REQUEST_FIELDS) == protocol.REQUEST_FIELDS
    # Ranges: the add-on refuses exactly outside the server's limits.
    for f in dataclasses.fields(protocol.OutputOptions):
        lo, hi, _ = _bounds(out[f.name])
        for value, ok in ((lo, True), (hi, True), (lo - 1, False), (hi + 1, False)):
            options = dataclasses.replace(protocol.OutputOptions(), **{f.name: value})
            if ok:
                options.validate()
            else:
                with pytest.raises(ValueError):
                    options.validate()


def test_addon_kind_table_is_the_engine_registry():
    for kind, spec in jobs.ENGINES.items():
        info = protocol.KINDS[kind]
        assert info.fields == spec.reads and info.takes_photo == spec.takes_photo, kind
        assert info.needs_prompt == spec.needs_prompt, kind
    assert set(protocol.KINDS) == set(jobs.ENGINES) == set(protocol.JOB_KINDS)


def test_info_publishes_what_each_kind_reads(tmp_path):
    config = config_from_args(["--data", str(tmp_path)])
    with TestClient(create_app(config), base_url="http://127.0.0.1") as client:
        engines = client.get("/v1/info").json()["engines"]
    assert engines["avatar"]["fields"] == sorted(jobs.ENGINES["avatar"].reads)
    assert "preset" not in engines["avatar"]["fields"] and "preset" in engines["text_to_3d"]["fields"]
    assert engines["photo_avatar"]["takes_photo"] and engines["text_to_3d"]["needs_prompt"]
    parsed = protocol.ServerInfo.from_dict({"engines": engines})
    assert parsed.engines["avatar"] == protocol.KINDS["avatar"]


def test_a_field_the_kind_does_not_read_is_refused_not_dropped(tmp_path):
    from server.schemas import job_request_model

    Request = job_request_model(["avatar", "text_to_3d"])
    # The old form (every field sent, at its default) is still accepted.
    Request.model_validate({"kind": "avatar", "preset": "draft", "negative_prompt": ""})
    for body, field in (
        ({"kind": "avatar", "preset": "high"}, "preset"),
        ({"kind": "avatar", "negative_prompt": "blurry"}, "negative_prompt"),
        ({"kind": "text_to_3d", "prompt": "a cup", "variation": 0.5}, "variation"),
        ({"kind": "text_to_3d", "prompt": "a cup", "attributes": {"beard": "full"}}, "attributes"),
    ):
        with pytest.raises(ValueError, match=f"do not read {field}"):
            Request.model_validate(body)
    with pytest.raises(ValueError, match="needs a prompt"):
        Request.model_validate({"kind": "text_to_3d"})
    # core refuses the same, for callers of run_job that skip the server.
    with pytest.raises(jobs.JobError, match="avatar jobs do not read preset"):
        jobs.run_job("avatar", {"preset": "high"}, tmp_path, None)


def test_a_bool_is_not_a_seed():
    from server.schemas import JobParams

    with pytest.raises(ValueError, match="seed"):
        JobParams.model_validate({"kind": "avatar", "seed": True})


def _literal_default(value: ast.expr | None) -> bool:
    """``value`` gives a literal default: a constant, or ``Field(128)`` / ``field(default=128)``."""
    if isinstance(value, ast.Constant):
        return value.value is not ...
    if isinstance(value, ast.Call):
        given = [*value.args[:1], *(k.value for k in value.keywords if k.arg == "default")]
        return any(isinstance(v, ast.Constant) and v.value is not ... for v in given)
    return False


def _default_definitions(path: Path, names: set[str]) -> list[str]:
    """Places in a module that give one of ``names`` a literal default: a field of an *Options
    class, a ``.get(name, literal)``, or a command-line flag ``--name`` with a literal default."""
    tree = ast.parse(path.read_text())
    hits = []
    for cls in ast.walk(tree):
        if isinstance(cls, ast.ClassDef) and "Options" in cls.name:
            for node in cls.body:
                named = isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                if named and node.target.id in names and _literal_default(node.value):
                    hits.append(f"{path.name}:{node.lineno} {node.target.id}")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args or not isinstance(node.args[0], ast.Constant):
            continue
        attr, key = getattr(node.func, "attr", None), node.args[0].value
        if attr == "get" and key in names and len(node.args) == 2 and _literal_default(node.args[1]):
            hits.append(f"{path.name}:{node.lineno} get({key!r})")
        flag = str(key).lstrip("-").replace("-", "_")
        if attr == "add_argument" and flag in names:
            default = next((k.value for k in node.keywords if k.arg == "default"), None)
            if _literal_default(default):
                hits.append(f"{path.name}:{node.lineno} {key}")
    return hits


def test_each_output_default_is_defined_once():
    names = {"resolution", "texture_size", "turntable_frames", "turntable_size"}
    places = {
        name: [h for f in sorted((ROOT / "core").rglob("*.py")) + sorted((ROOT / "server").rglob("*.py"))
               for h in _default_definitions(f, {name})]
        for name in names
    }  # fmt: skip
    # core/pipelines/jobs.py holds each; the add-on's mirror is checked against the schema above.
    # The one other place is a choice, not a copy: the avatar batch command makes no videos
    # unless asked (16 avatars x 36 frames would double a batch's time).
    places["turntable_frames"] = [
        p
        for p in places["turntable_frames"]
        if not (p.startswith("avatar.py:") and p.endswith("--turntable-frames"))
    ]
    assert {n: [p.split(":")[0] for p in ps] for n, ps in places.items()} == {n: ["jobs.py"] for n in names}


def test_no_kind_string_tests_outside_the_registry():
    # `kind == "text_to_3d"`-style tests belong to the engine registry (jobs.ENGINES, protocol.KINDS).
    offenders = []
    for package in ("core", "server", "blender_addon"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute | ast.Name):
                    name = node.left.attr if isinstance(node.left, ast.Attribute) else node.left.id
                    literal = [c for c in node.comparators if isinstance(c, ast.Constant)]
                    if name == "kind" and any(c.value in jobs.ENGINES for c in literal):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
