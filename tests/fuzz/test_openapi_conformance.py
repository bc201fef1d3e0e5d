"""Every answer conforms to /openapi.json, as schemathesis's own checks see it.

``test_openapi_fuzz.py`` asserts the invariants that hold whatever the input;
this module runs the checks ``st run --checks all`` runs on every response
(status code, content type, headers and body as documented), the event
stream included: each Server-Sent Event is a documented ``SyncEvent`` whose
``data`` is a SyncRecord as JSON text. Generated path parameters are replaced
by real ones (a finished sync, a synced network), so the operations answer
200 and their bodies are checked too, not only their 404s.
"""

from __future__ import annotations

import json
import os
import threading

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode

from service.extensions import services
from service.live import slots_for
from tests.integration.conftest_http import (
    BEARER,
    account,
    finish_sync,
    login_body,
    post_login,
)

#: cases per operation (positive mode): a fifth of the fuzz test's
EXAMPLES = max(10, int(os.environ.get("FUZZ_EXAMPLES", "150")) // 5)


def synced_user(app) -> tuple[str, str]:
    """A user whose GitHub followers were synced (one finished sync): (user_id, sync_id)."""
    user_id = "u-conform-" + os.urandom(3).hex()
    started = post_login(app.test_client(), login_body(user_id, account("github")))
    assert started.status_code == 202, started.get_data()[:300]
    sync_id = started.get_json()["syncs"][0]["sync_id"]
    with app.app_context():
        assert finish_sync(services(), sync_id, [("1", "ada"), ("2", "bob")]) == "succeeded"
    return user_id, sync_id


def sse_events(body: str) -> list[tuple[str, dict]]:
    """(event, data) of each event of a text/event-stream body that carries data."""
    events = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and line[0] != ":")
        if "data" in fields:
            events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return events


def test_every_answer_conforms_to_the_document(http_app, capsys):
    user_id, sync_id = synced_user(http_app)
    real = {"sync_id": sync_id, "user_id": user_id, "provider": "github", "relation": "followers"}
    schema = schemathesis.openapi.from_wsgi("/openapi.json", http_app)
    statuses: dict[str, set] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        statuses[label] = set()

        @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case):
            for name in list(case.path_parameters or {}):
                if name in real and operation.path.startswith("/v1/"):
                    case.path_parameters[name] = real[name]
            headers = {**dict(case.headers or {}), **BEARER}
            # every check schemathesis has for a single answer; the failure says which
            response = case.call_and_validate(headers=headers)
            statuses[label].add(response.status_code)

        check()
    with capsys.disabled():
        print(f"\nconformance: {len(statuses)} operations, {EXAMPLES} cases each")
    # the real ids reached the handlers: the reads answered their documented 200s
    for label in (
        "GET /v1/syncs/{sync_id}",
        "GET /v1/syncs/{sync_id}/events",
        "GET /v1/users/{user_id}/networks/{provider}/{relation}",
        "GET /v1/users/{user_id}/networks/{provider}/{relation}/changes",
    ):
        assert 200 in statuses[label], (label, statuses[label])


def test_a_live_event_stream_conforms_progress_then_final(http_app):
    """A sync in flight: ``progress`` (the record as it was), then ``final`` when it ends.

    The sync is finished once the stream holds its live slot: the stream read its
    record before taking the slot, so the first event is ``progress`` whatever the
    timing, and the change it then waits for is the ``final`` one.
    """
    user_id = "u-stream-" + os.urandom(3).hex()
    started = post_login(http_app.test_client(), login_body(user_id, account("github")))
    sync_id = started.get_json()["syncs"][0]["sync_id"]
    with http_app.app_context():
        svc = services()
    slots, given_up = slots_for(svc), threading.Event()

    def finish_once_streaming():
        while not slots.held:
            if given_up.wait(0.01):
                return
        finish_sync(svc, sync_id, [("1", "ada")])

    finisher = threading.Thread(target=finish_once_streaming, daemon=True)
    finisher.start()
    schema = schemathesis.openapi.from_wsgi("/openapi.json", http_app)
    operation = schema["/v1/syncs/{sync_id}/events"]["GET"]
    case = operation.Case(path_parameters={"sync_id": sync_id}, headers=BEARER)
    try:
        response = case.call_and_validate()
    finally:
        given_up.set()
        finisher.join(10)
    events = sse_events(response.text)
    assert [name for name, _ in events][0] == "progress" and events[-1][0] == "final"
    assert events[0][1]["status"] in ("queued", "running")
    assert events[-1][1]["status"] == "succeeded"
