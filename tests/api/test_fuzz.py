"""Requests generated from visionq's own OpenAPI schema (schemathesis + Hypothesis): none may get a 500."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from tests.api.conftest import EMBEDDED, StackFactory


def test_no_generated_request_gets_a_server_error(make_stack: StackFactory) -> None:
    stack = make_stack(EMBEDDED)
    schema = schemathesis.openapi.from_asgi("/openapi.json", stack.client.app)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the API's own schema does not load: {result}"
        operations.append(result.ok())
    assert len(operations) >= 9  # every route of the API is in its schema

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def request_answers_without_a_server_error(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(checks=[not_a_server_error])

        request_answers_without_a_server_error()
