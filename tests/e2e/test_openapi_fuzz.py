"""The real API against its own OpenAPI document, fuzzed by schemathesis (bounded examples).

Every operation gets generated requests, authenticated as a real signed-in device: no
answer may be a 5xx, and every answer must be documented (status, content type, body).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import APIOperation, Case
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.api import ApiClient, Login
from tests.support.platform import Platform

_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
_EXAMPLES = 15
# These would end the fuzzing device itself; their answers are covered by tests/api.
_ENDS_THE_CALLER = {("POST", "/v1/auth/logout"), ("DELETE", "/v1/devices/{device_id}")}


@pytest.fixture(scope="module")
def signed_in(platform: Platform) -> Iterator[Login]:
    client = ApiClient(platform.http_url)
    yield client.new_user("fuzz")
    client.close()


def _operations(platform: Platform) -> list[APIOperation[Any, Any, Any, Any]]:
    schema = schemathesis.openapi.from_url(f"{platform.http_url}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # the document itself is invalid
        operations.append(result.ok())
    return [op for op in operations if (op.method.upper(), op.path) not in _ENDS_THE_CALLER]


def test_every_operation_answers_as_documented(platform: Platform, signed_in: Login) -> None:
    operations = _operations(platform)
    assert len(operations) > 20  # the document lists the API, not an empty shell
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case: Case[Any]) -> None:
            case.call_and_validate(base_url=platform.http_url, headers=signed_in.headers, checks=_CHECKS)

        try:
            exercise()
        except Exception as exc:  # noqa: BLE001 - every operation is tried; all failures are reported
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
