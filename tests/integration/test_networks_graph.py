"""A small real graph end to end: simulator accounts among each other's connections,
real workers, PostgreSQL; members, the change feed, re-syncs and a worker killed in
the middle of a finalization."""

from __future__ import annotations

import secrets

import pytest

from devtools.devstack import DevStack, WorkerSpec
from tests.integration.conftest import TEST_ENV, Stack, new_user, stack_options

#: on a shared Redis (REDIS_URL set): the crash stack's database (the others: conftest
#: 15, test_queues 9-12, ops and quotas 12-14)
CRASH_DB = 8


def feed_cursor(stack) -> str:
    """The feed's end now: what a consumer starting fresh would resume from."""
    cursor = "0"
    while True:
        body = stack.http.get(
            f"{stack.web}/v1/changes", params={"after": cursor, "limit": 1000}, timeout=30
        ).json()
        if not body["changes"]:
            return body["next_cursor"]
        cursor = body["next_cursor"]


def feed_since(stack, cursor: str, users: set) -> list[dict]:
    entries = []
    while True:
        body = stack.http.get(
            f"{stack.web}/v1/changes", params={"after": cursor, "limit": 1000}, timeout=30
        ).json()
        if not body["changes"]:
            return [e for e in entries if e["user_id"] in users]
        entries += body["changes"]
        cursor = body["next_cursor"]


def login_and_wait(stack, user: str, account: dict) -> list[dict]:
    response = stack.login(user, account)
    assert response.status_code == 202, response.text
    records = [stack.wait_final(s["sync_id"]) for s in response.json()["syncs"]]
    assert all(r["status"] == "succeeded" for r in records), records
    return records


def members(stack, user: str, relation: str) -> dict:
    response = stack.http.get(
        f"{stack.web}/v1/users/{user}/networks/github/{relation}/members",
        params={"limit": 100},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return {m["user_id"]: m["id"] for m in response.json()["members"]}


def github_account(stack, size: int, **extra) -> dict:
    return stack.add_account("github", size, id=f"gh-{secrets.token_hex(4)}", **extra)


def test_members_and_the_feed_over_a_graph_of_linked_users(stack):
    start = feed_cursor(stack)
    bob_account, carol_account = github_account(stack, 3), github_account(stack, 4)
    alice_account = github_account(
        stack,
        20,
        relations=["followers", "following"],
        connections_include={
            "followers": [bob_account["id"], carol_account["id"]],
            "following": [carol_account["id"]],
        },
    )
    alice, bob, carol = new_user(), new_user(), new_user()
    login_and_wait(stack, bob, bob_account)
    alice_syncs = login_and_wait(stack, alice, alice_account)
    assert {r["relation"] for r in alice_syncs} == {"followers", "following"}
    # included accounts come first in alice's followers, with their own profile ids
    bob_uid, carol_uid = stack.truth_list("github", alice_account["id"])[:2]
    assert members(stack, alice, "followers") == {bob: bob_uid}
    assert members(stack, alice, "following") == {}

    login_and_wait(stack, carol, carol_account)  # carol arrives: alice hears of it
    assert members(stack, alice, "followers") == {bob: bob_uid, carol: carol_uid}
    assert members(stack, alice, "following") == {carol: carol_uid}

    entries = feed_since(stack, start, {alice, bob, carol})
    synced = [(e["user_id"], e["relation"], e["initial"]) for e in entries if e["kind"] == "synced"]
    assert sorted(synced) == sorted(
        [
            (bob, "followers", True),
            (alice, "followers", True),
            (alice, "following", True),
            (carol, "followers", True),
        ]
    )
    joined = sorted(
        (e["user_id"], e["relation"], e["member_user_id"], e["connection"]["id"])
        for e in entries
        if e["kind"] == "member_joined"
    )
    assert joined == [
        (alice, "followers", carol, carol_uid),
        (alice, "following", carol, carol_uid),
    ]
    assert not [e for e in entries if e["kind"] in ("added", "removed")]  # first syncs only
    cursors = [int(e["cursor"]) for e in entries]
    assert cursors == sorted(cursors)


def test_a_resync_that_removes_and_adds_gives_the_right_feed_entries(stack):
    account = github_account(stack, 30)
    user = new_user()
    login_and_wait(stack, user, account)
    before = stack.truth("github", account["id"])
    stack.add_account("github", 30, start=5, id=account["id"], token=account["token"])
    after = stack.truth("github", account["id"])
    start = feed_cursor(stack)
    sync = stack.resync(user, "github", mode="full")  # removals: a full sync
    record = stack.wait_final(sync["sync_id"])
    assert record["status"] == "succeeded" and record["relation"] == "followers"
    entries = feed_since(stack, start, {user})
    assert entries[0]["kind"] == "synced" and not entries[0]["initial"]
    counts = entries[0]["counts"]
    assert {k: counts[k] for k in ("count", "added", "removed", "mode")} == {
        "count": 30,
        "added": 5,
        "removed": 5,
        "mode": "full",
    }
    assert counts["cost"]["calls"] == record["cost"]["calls"]
    assert {e["source"] for e in entries} == {"sync"}
    assert {e["connection"]["id"] for e in entries if e["kind"] == "added"} == after - before
    assert {e["connection"]["id"] for e in entries if e["kind"] == "removed"} == before - after
    assert {e["sync_id"] for e in entries} == {sync["sync_id"]}
    changes = stack.changes(user, "github")
    assert set(changes["added"]) == after - before and set(changes["removed"]) == before - after


@pytest.fixture(scope="module")
def crash_stack(tmp_path_factory):
    """The integration stack, but its worker runs ``tests/integration/crash_app.py``:
    the service's app with a kill, armed per user, around the finalization."""
    dev = DevStack(
        var_dir=tmp_path_factory.mktemp("crash-stack"),
        workers=[
            WorkerSpec(
                "normal,whale,trickle",
                pool="prefork",
                concurrency=2,
                name="crash",
                app="tests.integration.crash_app",
            )
        ],
        redis_db=CRASH_DB,
        **stack_options(TEST_ENV),
    )
    with dev:
        yield Stack(dev)


@pytest.mark.parametrize("point", ["before_finalize", "after_commit"])
def test_a_worker_killed_in_a_finalization_finalizes_exactly_once(crash_stack, point):
    """SIGKILL the worker process between "last page stored" and "finalized" (and
    between the PostgreSQL commit and the record going final): the redelivered task
    finishes the job, and the network and the feed hold the sync once."""
    stack = crash_stack
    account = github_account(stack, 250)
    user = new_user()
    marker = stack.dev.var_dir / f"crash-{point}-{user}"
    marker.touch()
    start = feed_cursor(stack)
    (record,) = login_and_wait(stack, user, account)
    assert not marker.exists(), "the worker reached the crash point (crash_app removes it)"
    assert set(stack.network_ids(user, "github")) == stack.truth("github", account["id"])
    entries = feed_since(stack, start, {user})
    assert [(e["kind"], e["sync_id"]) for e in entries] == [("synced", record["sync_id"])]
    assert record["connections_fetched"] == 250
