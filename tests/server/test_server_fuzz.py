"""Property-based fuzzing with schemathesis against the server's own OpenAPI schema: never a 5xx.

Bounded to ~60 s on a 2-core machine: per operation, up to 20 schema-valid and 20 invalid
requests, against a server that runs only the millisecond test engine. (schemathesis's
``pytest.from_fixture`` does not work with pytest 9, so the operations are driven here
with their hypothesis strategies.)
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis to fuzz the API")
from hypothesis import HealthCheck, given, settings  # noqa: E402  (after the importorskip)
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.server.harness import FAST, ServerProcess, private_tmp  # noqa: E402

FAST_PHOTO = "photo_avatar=tests.server.slow_engine:run_fast_job"
EXAMPLES_PER_OPERATION = 40


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[ServerProcess]:
    tmp_path = private_tmp()
    server = ServerProcess(
        tmp_path / "data",
        ["--engine", FAST, "--engine", FAST_PHOTO, "--kinds", "fast,photo_avatar"],
    )
    server.start()
    yield server
    server.stop()
    shutil.rmtree(tmp_path, ignore_errors=True)


def fuzz_operation(operation, statuses: set[int]) -> None:
    """Send schema-valid and invalid requests to one operation; fail on a 5xx or an undocumented reply."""
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
    )
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=strategy)
    def run(case) -> None:
        response = case.call(timeout=30)
        statuses.add(response.status_code)
        assert response.status_code < 500, (case.as_curl_command(), response.text)
        case.validate_response(response, checks=checks)

    run()


@pytest.mark.slow
def test_api_never_errors(fuzz_server: ServerProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = sorted(op.label for op in operations)
    # Every route of docs/API.md is in the schema, so every one gets fuzzed.
    assert labels == sorted(
        [
            "DELETE /v1/jobs/{job_id}",
            "GET /v1/health",
            "GET /v1/info",
            "GET /v1/jobs",
            "GET /v1/jobs/{job_id}",
            "GET /v1/jobs/{job_id}/artifacts/{name}",
            "GET /v1/jobs/{job_id}/preview",
            "GET /v1/jobs/{job_id}/events",
            "POST /v1/jobs",
            "POST /v1/jobs/photo",
            "POST /v1/jobs/{job_id}/cancel",
            "POST /v1/jobs/{job_id}/resume",
        ]
    ), labels
    statuses: dict[str, set[int]] = {}
    for operation in operations:
        fuzz_operation(operation, statuses.setdefault(operation.label, set()))
    # The fuzzer reached past validation: some jobs were created and some requests refused.
    assert 201 in statuses["POST /v1/jobs"] and 422 in statuses["POST /v1/jobs"], statuses
    assert fuzz_server.proc is not None and fuzz_server.proc.poll() is None
