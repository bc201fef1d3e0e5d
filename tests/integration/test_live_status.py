"""Following a sync live: ``?wait=N`` long-polls and ``/events`` Server-Sent Events.

A paused provider holds a sync still for as long as a test needs, with no
sleep: resuming it is the change the held requests must report.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading

import pytest
import requests

from devtools.devstack import ROOT, free_port, stop_process, wait_http
from service.config import DEV_API_TOKEN
from tests.integration.conftest import new_user
from tests.integration.ops_fixtures import LIVE_CAP
from tests.integration.test_operations import parked_of, wait_until

AUTH = {"Authorization": f"Bearer {DEV_API_TOKEN}"}


@contextlib.contextmanager
def held_sync(stack, provider: str, size: int = 30):
    """A sync that waits on its paused provider; resumed when the block ends."""
    stack.pause(provider)
    try:
        user, account = new_user(), stack.add_account(provider, size)
        sync_id = stack.login(user, account).json()["syncs"][0]["sync_id"]
        wait_until(lambda: parked_of(stack, sync_id), what="parked call")
        yield sync_id
    finally:
        stack.resume(provider)


def read_events(response, stop_after: str | None = None):
    """(event, data) pairs of an SSE response, up to the first ``stop_after`` event."""
    name = None
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name:
            yield name, json.loads(line[6:])
            if name == stop_after:
                return
            name = None


def open_stream(base: str, sync_id: str) -> requests.Response:
    return requests.get(
        f"{base}/v1/syncs/{sync_id}/events", headers=AUTH, stream=True, timeout=(5, 60)
    )


def test_long_poll_answers_when_the_sync_changes(ops_stack):
    with held_sync(ops_stack, "facebook") as sync_id:
        before = ops_stack.sync(sync_id)
        unchanged = ops_stack.http.get(f"{ops_stack.web}/v1/syncs/{sync_id}?wait=1", timeout=10)
        assert unchanged.status_code == 200 and unchanged.json()["status"] == before["status"]
        answers = []
        poll = threading.Thread(
            target=lambda: answers.append(
                ops_stack.http.get(
                    f"{ops_stack.web}/v1/syncs/{sync_id}", params={"wait": 30}, timeout=40
                )
            )
        )
        poll.start()
        ops_stack.resume("facebook")
        poll.join(40)
    changed = answers[0].json()
    assert answers[0].status_code == 200
    assert (changed["status"], changed["pages_fetched"], changed["waiting"]) != (
        before["status"],
        before["pages_fetched"],
        before["waiting"],
    )
    final = ops_stack.wait_final(sync_id)
    again = ops_stack.http.get(f"{ops_stack.web}/v1/syncs/{sync_id}?wait=30", timeout=5)
    assert again.json()["status"] == final["status"]  # a final sync answers at once


@pytest.mark.parametrize("wait,status", [("0", 422), ("31", 422), ("abc", 400), ("-1", 400)])
def test_a_bad_wait_is_a_clear_error(ops_stack, wait, status):
    user, account = new_user(), ops_stack.add_account("github", 1)
    sync_id = ops_stack.login(user, account).json()["syncs"][0]["sync_id"]
    answer = ops_stack.http.get(f"{ops_stack.web}/v1/syncs/{sync_id}?wait={wait}", timeout=10)
    assert answer.status_code == status and "wait" in answer.json()["error"]["message"]


def test_events_stream_progress_then_final(ops_stack):
    with held_sync(ops_stack, "facebook", size=120) as sync_id:
        stream = open_stream(ops_stack.web, sync_id)
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        events = read_events(stream, stop_after="final")
        first = next(events)
        assert first[0] == "progress" and first[1]["waiting"]["reason"] == "provider_paused"
        ops_stack.resume("facebook")
        rest = list(events)
    stream.close()
    names = [name for name, _ in rest]
    assert names[-1] == "final" and set(names[:-1]) <= {"progress"}
    assert rest[-1][1]["status"] == "succeeded" and rest[-1][1]["connections_fetched"] == 120
    missing = requests.get(f"{ops_stack.web}/v1/syncs/s_nope/events", headers=AUTH, timeout=5)
    assert missing.status_code == 404


def test_past_the_cap_live_requests_get_503_with_retry_after(ops_stack):
    with held_sync(ops_stack, "facebook") as sync_id:
        streams = [open_stream(ops_stack.web, sync_id) for _ in range(LIVE_CAP)]
        for stream in streams:
            assert next(read_events(stream))[0] == "progress"
        refused = ops_stack.http.get(f"{ops_stack.web}/v1/syncs/{sync_id}/events", timeout=5)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "5"
        assert refused.json()["error"]["code"] == "live_capacity"
        poll = ops_stack.http.get(f"{ops_stack.web}/v1/syncs/{sync_id}?wait=5", timeout=10)
        assert poll.status_code == 503
        assert ops_stack.http.get(f"{ops_stack.web}/v1/syncs/{sync_id}", timeout=5).ok
        streams.pop().close()
        wait_until(
            lambda: (
                ops_stack.http.get(
                    f"{ops_stack.web}/v1/syncs/{sync_id}?wait=1", timeout=10
                ).status_code
                == 200
            ),
            what="a slot given back",
        )
        for stream in streams:
            stream.close()


def test_gevent_web_worker_holds_many_streams_and_still_serves(ops_stack):
    """The Procfile's web role (gunicorn, gevent worker): one process, one worker,
    20 held streams, and plain requests are still answered."""
    port = free_port()
    env = {**ops_stack.dev.base_env, "LIVE_MAX_CONNECTIONS": "50"}
    web = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--worker-class",
            "gevent",
            "--worker-connections",
            "200",
            "service:create_app()",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", timeout=30)
        with held_sync(ops_stack, "facebook") as sync_id:
            streams = [open_stream(base, sync_id) for _ in range(20)]
            for stream in streams:
                assert next(read_events(stream))[0] == "progress"
            assert requests.get(base + "/healthz", timeout=5).ok
            assert requests.get(f"{base}/v1/syncs/{sync_id}", headers=AUTH, timeout=5).ok
            for stream in streams:
                stream.close()
    finally:
        stop_process(web)
