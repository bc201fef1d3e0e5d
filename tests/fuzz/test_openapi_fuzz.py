"""Every endpoint fuzzed from the app's own /openapi.json (schemathesis, Hypothesis).

Run by ``make fuzz`` (and CI: .ci/run). Invariants, whatever the input: never a
5xx; every error answer is the contract's JSON error; and no request without a
valid signature starts a sync (no generated request can carry one). Cases per
operation and generation mode (positive: fits the schema; negative: does not)
come from ``FUZZ_EXAMPLES`` (default 150).

schemathesis's own pytest plugin does not run under this pytest, so each
operation's Hypothesis strategy is driven here with ``@given``.
"""
from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode

from service.extensions import services
from tests.integration.conftest_http import (  # noqa: F401  (fixtures)
    BEARER, http_app, http_broker_url, recent_sync_ids,
)

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))


def operations(app):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def sync_count(app) -> int:
    with app.app_context():
        return len(recent_sync_ids(services()))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_endpoint_no_5xx_and_no_unsigned_sync(http_app, mode, capsys):
    ran = {}
    for operation in operations(http_app):
        label = f"{operation.method.upper()} {operation.path}"
        ran[label] = 0

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            before = sync_count(http_app)
            response = case.call(headers={**BEARER, **(case.headers or {})})
            ran[label] += 1
            assert response.status_code < 500, (label, response.status_code, response.text[:300])
            # the contract's JSON error; the dashboard's pages are for browsers and
            # answer an HTML page (its login form) instead
            content_type = response.headers.get("content-type") or ""
            if isinstance(content_type, list):  # schemathesis keeps every header as a list
                content_type = content_type[0] if content_type else ""
            html_page = operation.path.startswith("/dashboard") and content_type.startswith("text/html")
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
        print(f"\nfuzz {mode.value}: {sum(ran.values())} cases over {len(ran)} operations")
    assert ran and all(ran.values()), ran
