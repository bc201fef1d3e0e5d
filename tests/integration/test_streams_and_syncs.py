"""Syncs and streams together (issues 19 and 20), with real processes: a ``streams``
process applies pushed changes, then ``auto``/``incremental``/``full`` re-syncs read
the same networks.

What each test holds to (CONTRACT "Change feed"): a change a stream applied is not
written again by a later sync (one ``added`` entry per connection, one ``removed``);
the network ends equal to ``/_sim/truth`` (after an incremental sync, plus the
removals it cannot see). The case that could go wrong: a newest-first head (X,
Bluesky) that stops at a connection the stream added, when an older follow was
never pushed. A lost event is made by stopping the ``streams`` process, changing
the network, and cutting the channel with ``forget`` (its replay dropped) before the
next process starts inside the replay window: no gap is seen, nothing is marked.

GitHub has no push channel: nothing of it meets a stream (its modes are in
``test_sync_modes.py``).
"""

from __future__ import annotations

import secrets

import psycopg
import pytest
import requests

from devtools.devstack import DevStack, WorkerSpec, stop_process
from tests.integration.conftest import TEST_ENV, Stack, new_user, stack_options

PATIENCE_S = 60.0
#: the Redis database of this module's stack (test_streams: 7, the others 8 to 15)
INTERPLAY_DB = 6


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    dev = DevStack(
        var_dir=tmp_path_factory.mktemp("interplay"),
        workers=[WorkerSpec("normal,whale,trickle", pool="threads", concurrency=4, name="main")],
        redis_db=INTERPLAY_DB,
        **stack_options(TEST_ENV),
    )
    with dev:
        yield Stack(dev)


@pytest.fixture
def streams(stack):
    """Start ``streams`` processes on demand; all stopped after the test."""
    started = []

    def start(**env):
        proc = stack.dev.start_streams(f"streams-{len(started)}", env=env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop_process(proc)


# -- helpers ------------------------------------------------------------------------------
def wait_for(condition, what: str, patience: float = PATIENCE_S):
    import time

    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {patience}s: {what}")


def account_extra(provider: str) -> dict:
    # X ids are numbers (the Activity API's payloads carry them so)
    return {"id": str(10**17 + secrets.randbelow(10**17))} if provider == "twitter" else {}


def linked(stack, provider: str, size: int) -> tuple[str, dict]:
    """A user whose network a first (full) sync read; (user id, account)."""
    user_id = new_user()
    account = stack.add_account(provider, size, **account_extra(provider))
    response = stack.login(user_id, account)
    assert response.status_code == 202, response.text
    for sync in response.json()["syncs"]:
        record = stack.wait_final(sync["sync_id"])
        assert (record["status"], record["mode"]) == ("succeeded", "full"), record
    return user_id, account


def sim_change(stack, provider, account_id, **body) -> dict:
    response = requests.post(
        f"{stack.sim}/_sim/changes",
        json={"provider": provider, "account_id": account_id, **body},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


def open_channels(stack) -> dict:
    return requests.get(f"{stack.sim}/_sim/push", timeout=10).json()


def start_listening(stack, streams, provider: str, again: bool = False):
    """A ``streams`` process whose channel for ``provider`` is open; X: the new user's
    subscriptions made first (``again``: they exist from an earlier process)."""
    subscribed = open_channels(stack)["x_subscriptions"]
    proc = streams(STREAMS=provider)
    if provider == "twitter" and not again:
        # X delivers events only for subscriptions that exist when they happen
        wait_for(
            lambda: open_channels(stack)["x_subscriptions"] >= subscribed + 2, "X subscriptions"
        )
    wait_for(lambda: open_channels(stack)["open"].get(provider, 0) >= 1, f"{provider} open")
    return proc


def feed(database_url: str, user: str) -> list[tuple]:
    """This user's feed entries (kind, connection id, sync id, source), in order."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT kind, connection_id, sync_id, source FROM changes"
            " WHERE user_id = %s ORDER BY cursor",
            (user,),
        ).fetchall()


def entries_once(stack, user: str, kind: str) -> dict[str, str]:
    """connection id → source of every ``kind`` entry, asserting each is written once."""
    ids = [(e[1], e[3]) for e in feed(stack.dev.database_url, user) if e[0] == kind]
    assert len(ids) == len({i for i, _ in ids}), f"an {kind} entry was written twice: {ids}"
    return dict(ids)


def streamed(stack, user: str, kind: str, ids) -> None:
    """Wait until the stream wrote a ``kind`` entry for each of ``ids``."""
    wait_for(
        lambda: all(entries_once(stack, user, kind).get(i) == "stream" for i in ids),
        f"stream {kind} entries for {ids}",
    )


def resync(stack, user: str, provider: str, mode: str | None = None) -> dict:
    record = stack.wait_final(stack.resync(user, provider, mode=mode)["sync_id"], timeout=90)
    assert record["status"] == "succeeded", record
    return record


def network(stack, user: str, provider: str) -> set[str]:
    ids = stack.network_ids(user, provider)
    assert len(ids) == len(set(ids))
    return set(ids)


def needs_full(stack, user: str, provider: str) -> bool:
    with psycopg.connect(stack.dev.database_url) as conn:
        row = conn.execute(
            "SELECT needs_full FROM networks WHERE user_id = %s AND provider = %s"
            " AND relation = 'followers'",
            (user, provider),
        ).fetchone()
    return bool(row and row[0])


def lose_silently(stack, proc, provider: str, account_id: str, **change) -> dict:
    """A change the stream never delivers, and no gap anyone sees: the process stopped,
    the change made, the channel's replay dropped (``forget``)."""
    stop_process(proc)
    wait_for(lambda: open_channels(stack)["open"].get(provider, 0) == 0, f"{provider} closed")
    lost = sim_change(stack, provider, account_id, **change)
    stack.add_faults({"kind": "stream_disconnect", "provider": provider, "forget": True})
    return lost


# -- a: what the stream applied, a sync does not write again ----------------------------------
@pytest.mark.parametrize("provider", ["bluesky", "twitter", "mastodon"])
def test_an_auto_resync_writes_no_second_entry_for_what_the_stream_applied(
    stack, streams, provider
):
    user, account = linked(stack, provider, 120)
    start_listening(stack, streams, provider)
    added = sim_change(stack, provider, account["id"], add=4)["added"]
    streamed(stack, user, "added", added)
    removed = []
    if provider != "mastodon":  # Mastodon pushes no unfollows
        removed = [added[0]]
        sim_change(stack, provider, account["id"], remove=removed)
        streamed(stack, user, "removed", removed)

    record = resync(stack, user, provider)
    assert record["mode"] == "incremental", record
    assert network(stack, user, provider) == stack.truth(provider, account["id"])
    # the sync read the streamed ones (its head passed them) and wrote nothing for them
    assert set(entries_once(stack, user, "added")) == set(added)
    assert set(entries_once(stack, user, "removed")) == set(removed)
    assert all(e[3] == "stream" for e in feed(stack.dev.database_url, user) if e[0] != "synced")


# -- b: an older follow the stream never delivered ---------------------------------------------
@pytest.mark.parametrize("provider", ["bluesky", "twitter"])
@pytest.mark.parametrize("mode", ["auto", "incremental"])
def test_a_head_does_not_stop_at_a_streamed_follow_newer_than_a_lost_one(
    stack, streams, provider, mode
):
    user, account = linked(stack, provider, 300)
    proc = start_listening(stack, streams, provider)
    # lost: one follow and (for auto's count check to be fooled) one unfollow
    gone = sorted(stack.truth(provider, account["id"]))[:1]
    lost = lose_silently(stack, proc, provider, account["id"], add=1, remove=gone)
    start_listening(stack, streams, provider, again=True)
    # newer than the lost follow: more than a head's margin, all pushed and applied
    newer = sim_change(stack, provider, account["id"], add=8)["added"]
    streamed(stack, user, "added", newer)
    assert not needs_full(stack, user, provider)  # nothing saw the loss
    # the stored count now equals the provider's: a count check alone would pass
    assert len(network(stack, user, provider)) == len(stack.truth(provider, account["id"]))

    record = resync(stack, user, provider, mode=None if mode == "auto" else mode)
    have = network(stack, user, provider)
    assert set(lost["added"]) <= have, "the head stopped at a streamed follow"
    if mode == "auto":
        # the head found one more than the count allows: it read on in full
        assert (record["mode"], record["mode_reason"]) == ("full", "count_mismatch"), record
        assert have == stack.truth(provider, account["id"])
        assert set(entries_once(stack, user, "removed")) == set(gone)
    else:
        assert record["mode"] == "incremental", record
        assert have == stack.truth(provider, account["id"]) | set(gone)
    added = entries_once(stack, user, "added")
    assert set(added) == set(newer) | set(lost["added"])
    assert {added[i] for i in newer} == {"stream"}
    assert added[lost["added"][0]] == "sync"


def test_a_lost_follow_alone_is_caught_by_the_count_check(stack, streams):
    provider = "bluesky"
    user, account = linked(stack, provider, 300)
    proc = start_listening(stack, streams, provider)
    lost = lose_silently(stack, proc, provider, account["id"], add=1)
    start_listening(stack, streams, provider, again=True)
    newer = sim_change(stack, provider, account["id"], add=8)["added"]
    streamed(stack, user, "added", newer)
    resync(stack, user, provider)
    assert network(stack, user, provider) == stack.truth(provider, account["id"])
    assert entries_once(stack, user, "added")[lost["added"][0]] == "sync"


# -- c: a streamed removal stays removed; a full sync writes only what is new -----------------
@pytest.mark.parametrize("provider", ["bluesky", "twitter"])
def test_a_streamed_removal_is_not_resurrected_and_full_writes_only_the_rest(
    stack, streams, provider
):
    user, account = linked(stack, provider, 150)
    proc = start_listening(stack, streams, provider)
    added = sim_change(stack, provider, account["id"], add=3)["added"]
    streamed(stack, user, "added", added)
    # X pushes the unfollow of anyone; Jetstream only of a follow it saw made
    unfollowed = [added[0]]
    if provider == "twitter":
        unfollowed.append(sorted(stack.truth(provider, account["id"]) - set(added))[0])
    sim_change(stack, provider, account["id"], remove=unfollowed)
    streamed(stack, user, "removed", unfollowed)

    record = resync(stack, user, provider, mode="incremental")
    assert record["mode"] == "incremental", record
    assert not set(unfollowed) & network(stack, user, provider)
    assert network(stack, user, provider) == stack.truth(provider, account["id"])

    # one change the stream never delivers; the full sync writes its entries, only those
    lost = lose_silently(stack, proc, provider, account["id"], add=1)
    start_listening(stack, streams, provider, again=True)
    record = resync(stack, user, provider, mode="full")
    assert record["mode"] == "full", record
    assert network(stack, user, provider) == stack.truth(provider, account["id"])
    added_entries = entries_once(stack, user, "added")
    assert added_entries == {**dict.fromkeys(added, "stream"), lost["added"][0]: "sync"}
    assert entries_once(stack, user, "removed") == dict.fromkeys(unfollowed, "stream")


# -- c': a full sync reading while the stream pushes ------------------------------------------
@pytest.mark.parametrize(("provider", "size"), [("bluesky", 300), ("twitter", 3000)])
def test_a_full_sync_does_not_undo_what_the_stream_pushed_while_it_read(
    stack, streams, provider, size
):
    """Three slow pages; after the first is read (it holds the newest follow), that
    follow is undone and a new one made, both pushed. The pages are older than the
    pushes: the sync must neither re-add the one nor remove the other."""
    user, account = linked(stack, provider, size)
    start_listening(stack, streams, provider)
    undone = sim_change(stack, provider, account["id"], add=1)["added"]
    streamed(stack, user, "added", undone)
    slow = {"kind": "latency", "provider": provider, "account": account["id"]}
    slow.update(path_kind="page", mean=1500, jitter=0, id=f"slow-{user}")
    stack.add_faults(slow)
    try:
        sync_id = stack.resync(user, provider, mode="full")["sync_id"]
        wait_for(lambda: stack.sync(sync_id)["pages_fetched"] >= 1, "the first page read")
        sim_change(stack, provider, account["id"], remove=undone)
        made = sim_change(stack, provider, account["id"], add=1)["added"]
        streamed(stack, user, "removed", undone)
        streamed(stack, user, "added", made)
        assert stack.sync(sync_id)["status"] == "running"  # pages still to read
        record = stack.wait_final(sync_id, timeout=90)
    finally:
        requests.post(f"{stack.sim}/_sim/faults", json={"remove": [slow["id"]]}, timeout=10)
    assert (record["status"], record["mode"]) == ("succeeded", "full"), record
    assert network(stack, user, provider) == stack.truth(provider, account["id"])
    assert entries_once(stack, user, "added") == {undone[0]: "stream", made[0]: "stream"}
    assert entries_once(stack, user, "removed") == {undone[0]: "stream"}
