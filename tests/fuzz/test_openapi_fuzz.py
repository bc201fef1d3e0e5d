"""Every endpoint fuzzed from the app's own /openapi.json (schemathesis, Hypothesis).

Run by ``make fuzz`` (and CI: .ci/run). Invariants, whatever the input: never a
5xx; every error answer is the contract's JSON error; and no request without a
valid signature starts a sync (no generated request can carry one). Cases per
operation and generation mode (positive: fits the schema; negative: does not)
come from ``FUZZ_EXAMPLES`` (default 150; ``make fuzz``: 300).

schemathesis generates an ``Authorization`` header from the bearer scheme; a
random token would stop nearly every case at the 401 before the handler reads
its input, so three cases in four carry the valid token instead (the fourth
keeps the generated one, so the token check is fuzzed too).

schemathesis's own pytest plugin does not run under this pytest, so each
operation's Hypothesis strategy is driven here with ``@given``.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode

from service.extensions import services
from tests.integration.conftest_http import (
    BEARER,
    recent_sync_ids,
)

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))


def operations(app):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def request_headers(case, generated_auth: bool) -> dict:
    """The case's headers; the valid token unless the generated one is kept."""
    headers = dict(case.headers or {})
    if generated_auth:
        return {**BEARER, **headers}
    return {**{k: v for k, v in headers.items() if k.lower() != "authorization"}, **BEARER}


def sync_count(app) -> int:
    with app.app_context():
        return len(recent_sync_ids(services()))


def test_the_fuzzed_app_reads_a_migrated_database(http_app):
    """Otherwise every PostgreSQL read answers 500 whatever the input (tests/fuzz/conftest.py)."""
    response = http_app.test_client().get("/v1/changes", headers=BEARER)
    assert response.status_code == 200, response.get_data()[:300]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_endpoint_no_5xx_and_no_unsigned_sync(http_app, mode, capsys):
    ran, past_token = {}, {}
    for operation in operations(http_app):
        label = f"{operation.method.upper()} {operation.path}"
        ran[label] = past_token[label] = 0

        @given(
            case=operation.as_strategy(generation_mode=mode),
            generated_auth=st.integers(0, 3).map(lambda n: n == 3),
        )
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case, generated_auth):
            before = sync_count(http_app)
            response = case.call(headers=request_headers(case, generated_auth))
            ran[label] += 1
            past_token[label] += response.status_code != 401
            assert response.status_code < 500, (label, response.status_code, response.text[:300])
            # the contract's JSON error; the dashboard's pages are for browsers and
            # answer an HTML page (its login form) instead
            content_type = response.headers.get("content-type") or ""
            if isinstance(content_type, list):  # schemathesis keeps every header as a list
                content_type = content_type[0] if content_type else ""
            html_page = operation.path.startswith("/dashboard") and content_type.startswith(
                "text/html"
            )
            if response.status_code >= 400 and not html_page:
                assert "error" in response.json(), (label, response.text[:300])
            if operation.path.startswith("/webhooks"):
                assert response.status_code != 202, "an unsigned login was accepted"
                assert sync_count(http_app) == before, "an unsigned login started a sync"

        try:
            check()
        except Unsatisfiable:
            # negative mode on an operation with nothing to get wrong (no parameters)
            assert mode is GenerationMode.NEGATIVE, label
            del ran[label]
    with capsys.disabled():
        print(
            f"\nfuzz {mode.value}: {sum(ran.values())} cases over {len(ran)} operations,"
            f" {sum(past_token[label] for label in ran)} past the token check"
        )
    assert ran and all(ran.values()), ran
    # the API's handlers read the fuzzed input only behind the bearer token
    assert all(past_token[label] for label in ran if " /v1/" in label), past_token
