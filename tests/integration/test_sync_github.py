"""End-to-end GitHub syncs: signed webhook → web → Celery workers → stored network.

Real processes throughout: embedded Redis, the simulator over HTTP, the web
app, a prefork Celery worker and the scheduler.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import time

import pytest

from tests.integration.conftest import new_user

#: the core sync tests: also run on a Redis Cluster + RabbitMQ (make integration-cluster)
pytestmark = pytest.mark.cluster


def sync_one(stack, size, **account_extra):
    account = stack.add_account("github", size, **account_extra)
    user = new_user()
    response = stack.login(user, account)
    assert response.status_code == 202, response.text
    (sync,) = response.json()["syncs"]
    assert sync["status"] == "queued"
    return user, account, stack.wait_final(sync["sync_id"], timeout=180)


@pytest.mark.parametrize("size", [0, 1, 99, 100, 101, 250, 12_345])
def test_sync_equals_truth(stack, size):
    user, account, record = sync_one(stack, size)
    assert record["status"] == "succeeded", record
    ids = stack.network_ids(user, "github")
    assert len(ids) == len(set(ids)) == size
    assert set(ids) == stack.truth("github", account["id"])
    assert record["connections_fetched"] == size
    assert record["expected_total"] == size


def test_changed_truth_gives_added_and_removed(stack):
    user, account, record = sync_one(stack, 300)
    before = stack.truth("github", account["id"])
    # The account loses its 20 oldest followers and gains 35 new ones.
    stack.add_account("github", 315, start=20, id=account["id"], token=account["token"])
    after = stack.truth("github", account["id"])
    sync = stack.resync(user, "github", force=True, mode="full")  # removals: a full sync
    record = stack.wait_final(sync["sync_id"])
    assert record["status"] == "succeeded"
    changes = stack.changes(user, "github")
    assert changes["sync_id"] == sync["sync_id"]
    assert set(changes["added"]) == after - before and len(changes["added"]) == 35
    assert set(changes["removed"]) == before - after and len(changes["removed"]) == 20
    assert set(stack.network_ids(user, "github")) == after


def test_login_inside_freshness_window_is_fresh(stack):
    user, account, record = sync_one(stack, 10)
    response = stack.login(user, account)
    (sync,) = response.json()["syncs"]
    assert sync["status"] == "fresh" and sync["sync_id"] == record["sync_id"]


def test_concurrent_triggers_start_one_sync(stack):
    account = stack.add_account("github", 500)
    user = new_user()
    with concurrent.futures.ThreadPoolExecutor(max_workers=25) as pool:
        answers = list(pool.map(lambda _: stack.login(user, account), range(50)))
    assert all(a.status_code == 202 for a in answers)
    sync_ids = {a.json()["syncs"][0]["sync_id"] for a in answers}
    assert len(sync_ids) == 1
    assert stack.wait_final(sync_ids.pop())["status"] == "succeeded"


def test_revoked_token_mid_sync_keeps_previous_network(stack):
    user, account, record = sync_one(stack, 3_000)
    previous = set(stack.network_ids(user, "github"))
    stack.add_faults(
        {"provider": "github", "kind": "revoke_token", "token": account["token"], "at_call": 5}
    )
    sync = stack.resync(user, "github", force=True)
    record = stack.wait_final(sync["sync_id"])
    assert record["status"] == "needs_reauth", record
    assert record["error"]["kind"] == "bad_credentials"
    assert set(stack.network_ids(user, "github")) == previous


def test_outage_is_retried_then_fails_with_network_kept(stack):
    user, account, record = sync_one(stack, 150)
    stack.add_faults(
        {"provider": "github", "kind": "outage", "account": account["id"], "from_call": 1}
    )
    sync = stack.resync(user, "github", force=True)
    record = stack.wait_final(sync["sync_id"], timeout=60)
    assert record["status"] == "failed" and record["error"]["kind"] == "unavailable"
    assert len(stack.network_ids(user, "github")) == 150


def test_unknown_account_fails_without_touching_anything(stack):
    real = stack.add_account("github", 5)
    # A valid token asking for a login GitHub does not know: 404.
    account = {"provider": "github", "id": "nobody-here", "token": real["token"]}
    user = new_user()
    syncs = stack.login(user, account).json()["syncs"]  # no relations named: every one
    assert sorted(s["relation"] for s in syncs) == ["followers", "following"]
    for sync in syncs:
        record = stack.wait_final(sync["sync_id"])
        assert record["status"] == "failed" and record["error"]["kind"] == "not_found"


def worker_children(stack) -> list[int]:
    main = stack.dev.processes["main"].pid
    out = subprocess.run(["pgrep", "-P", str(main)], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def test_killed_worker_process_loses_nothing(stack):
    """SIGKILL the pool processes mid-sync: their messages come back (acks late)."""
    account = stack.add_account("github", 20_000)
    user = new_user()
    (sync,) = stack.login(user, account).json()["syncs"]
    deadline = time.monotonic() + 30
    while stack.sync(sync["sync_id"])["pages_fetched"] < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = worker_children(stack)
    assert killed, "the prefork worker has pool processes"
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    record = stack.wait_final(sync["sync_id"], timeout=180)
    assert record["status"] == "succeeded", record
    ids = stack.network_ids(user, "github")
    assert len(ids) == 20_000 and set(ids) == stack.truth("github", account["id"])
