"""The one mapping from error codes to HTTP statuses: complete, documented in the README and in the
OpenAPI schema, and the only place a code's status comes from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.api.conftest import EMBEDDED, StackFactory
from visionq.api.errors import STATUS, status_of
from visionq.errors import JOB_ONLY_CODES, ErrorCode, InvalidImage, JobFailed, VisionqError

README = Path(__file__).parents[2] / "README.md"


def test_every_code_has_a_status_or_is_only_ever_recorded_on_a_failed_job() -> None:
    assert set(STATUS).isdisjoint(JOB_ONLY_CODES)
    assert set(STATUS) | JOB_ONLY_CODES == set(ErrorCode)


def test_the_readme_lists_every_code_with_its_status() -> None:
    rows = re.findall(r"^\| `([a-z_]+)` \| ([0-9]{3}|job only) \|", README.read_text(), flags=re.MULTILINE)
    documented = dict(rows)

    assert len(rows) == len(documented), "a code is listed twice"
    assert documented == {code.value: str(status) for code, status in STATUS.items()} | {
        code.value: "job only" for code in JOB_ONLY_CODES
    }


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidImage("x", code=ErrorCode.NOT_AN_IMAGE), 415),
        (InvalidImage("x", code=ErrorCode.EMPTY), 400),
        (InvalidImage("x"), 422),  # the class's own code: corrupt
        (JobFailed("x", code=ErrorCode.TIMEOUT), 500),  # never a response: a bug if it ever is one
        (VisionqError("x"), 500),
    ],
)
def test_the_status_comes_from_the_code(error: VisionqError, status: int) -> None:
    assert status_of(error) == status


def test_the_openapi_schema_lists_the_codes_and_which_status_carries_which(make_stack: StackFactory) -> None:
    schema = make_stack(EMBEDDED).client.get("/openapi.json").json()

    assert set(schema["components"]["schemas"]["ErrorCode"]["enum"]) == {c.value for c in ErrorCode}
    responses = schema["paths"]["/v1/jobs"]["post"]["responses"]
    for code in ("corrupt", "invalid_request", "unknown_class", "unknown_model"):
        assert f"`{code}`" in responses["422"]["description"]
    assert "`too_large`" in responses["413"]["description"]
    assert responses["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorOut"
    }
