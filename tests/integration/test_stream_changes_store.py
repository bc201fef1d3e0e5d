"""``NetworkStore.apply_stream_changes`` against a real PostgreSQL: pushed changes are
applied once by their identity, only to synced networks, and write the feed as a
sync does (``source: stream``, no sync id)."""

from __future__ import annotations

import secrets
import threading
import time

import pytest

from state.networks import NetworkStore, StreamChange
from tests.integration.test_network_store import feed_of, feed_start, finalize, user


@pytest.fixture(scope="module")
def networks(database_url):
    store = NetworkStore(database_url, max_connections=20)
    yield store
    store.close()


def change(me, kind, connection_id, key=None, relation="followers"):
    return StreamChange(
        me,
        "github",
        relation,
        kind,
        str(connection_id),
        f"h{connection_id}",
        key or f"test:{secrets.token_hex(8)}",
    )


def stream_entries(networks, start, me):
    return [
        (e["kind"], e["connection"]["id"], e["sync_id"], e["source"])
        for e in feed_of(networks, start, {me})
        if e["source"] == "stream"
    ]


def test_pushed_changes_reach_network_and_feed_once(networks):
    me = user()
    finalize(networks, me, [1, 2, 3])
    start = feed_start(networks)
    add = change(me, "added", 4)
    applied = networks.apply_stream_changes([add, change(me, "removed", 1)])
    assert [c.connection_id for c in applied] == ["4", "1"]
    # the same events again (a replay): nothing
    assert networks.apply_stream_changes([add]) == []
    # another event for a connection already there / already gone: nothing either
    assert networks.apply_stream_changes([change(me, "added", 4), change(me, "removed", 1)]) == []
    assert stream_entries(networks, start, me) == [
        ("added", "4", None, "stream"),
        ("removed", "1", None, "stream"),
    ]
    meta, page, _ = networks.network_page(me, "github", "followers", None, 10)
    assert [c["id"] for c in page] == ["2", "3", "4"] and meta["count"] == 3
    # a later sync that finds the pushed connection already there writes no entry for it
    finalize(networks, me, [2, 3, 4])
    assert [e["kind"] for e in feed_of(networks, start, {me}) if e["source"] == "sync"] == [
        "synced"
    ]


def test_a_replayed_follow_after_its_undo_changes_nothing(networks):
    me = user()
    finalize(networks, me, [1])
    start = feed_start(networks)
    follow, unfollow = (
        change(me, "added", 9, "test:f9" + me),
        change(me, "removed", 9, "test:u9" + me),
    )
    assert len(networks.apply_stream_changes([follow, unfollow])) == 2  # order kept in a batch
    assert networks.apply_stream_changes([follow]) == []  # the create replayed
    assert [e[0] for e in stream_entries(networks, start, me)] == ["added", "removed"]
    assert networks.network_page(me, "github", "followers", None, 10)[1] == [
        {"id": "1", "handle": "h1"}
    ]


def test_a_network_never_synced_is_left_to_its_first_sync(networks):
    me = user()
    assert networks.apply_stream_changes([change(me, "added", 1)]) == []
    assert networks.network_page(me, "github", "followers", None, 10) is None


def test_two_appliers_of_the_same_events_apply_each_once(networks):
    me = user()
    finalize(networks, me, [0])
    start = feed_start(networks)
    events = [change(me, "added", i, f"test:{me}:{i}") for i in range(1, 101)]
    results = []

    def apply(batch):
        for i in range(0, len(batch), 10):
            results.extend(networks.apply_stream_changes(batch[i : i + 10]))

    threads = [
        threading.Thread(target=apply, args=(events,)),
        threading.Thread(target=apply, args=(events[::-1],)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(int(c.connection_id) for c in results) == list(range(1, 101))
    assert len(stream_entries(networks, start, me)) == 100


def test_needs_full_marks_the_providers_networks(networks):
    me = user()
    finalize(networks, me, [1], provider="bluesky")
    assert networks.mark_needs_full("bluesky", [me]) == 1
    assert networks.mark_needs_full("bluesky", [me]) == 0  # already marked


def test_a_streamed_connection_is_marked_until_a_sync_reads_it(networks):
    """A head stops at the first connection a sync read, never at one only a stream
    added (``0006_stream_marks``): the store says which is which."""
    me = user()
    finalize(networks, me, [1, 2, 3])
    networks.apply_stream_changes([change(me, "added", 4), change(me, "added", 5)])
    assert networks.known_ids_by_origin(me, "github", "followers", ["3", "4", "5", "9"]) == (
        {"3"},
        {"4", "5"},
    )
    assert networks.freshness(me, "github", "followers")["streamed"] == 2
    # an incremental head that read 5 and 3 (not 4): 5 is the sync's now, 4 still the stream's
    finalize(networks, me, [5, 3], mode="incremental", at=time.time())
    assert networks.known_ids_by_origin(me, "github", "followers", ["3", "4", "5"]) == (
        {"3", "5"},
        {"4"},
    )
    assert networks.freshness(me, "github", "followers")["streamed"] == 1
    # a full sync started after the change reads all: no mark is left
    finalize(networks, me, [1, 2, 3, 4, 5], at=time.time())
    assert networks.freshness(me, "github", "followers")["streamed"] == 0


def test_a_full_sync_does_not_undo_a_change_pushed_while_it_read(networks):
    """Pages read before a pushed change are older than it: the finalization keeps a
    connection the stream added and does not re-add one it removed, and writes no
    entry for either; the next full sync, started after, settles both."""
    me = user()
    finalize(networks, me, [1, 2, 3])
    started = time.time() - 1  # the sync started (and read its pages) before the pushes
    networks.apply_stream_changes([change(me, "added", 4), change(me, "removed", 3)])
    start = feed_start(networks)
    result = finalize(networks, me, [1, 2, 3], at=time.time(), started_at=started)
    assert (result.added, result.removed, result.count) == (0, 0, 3)
    assert sorted(networks.known_ids(me, "github", "followers", ["1", "2", "3", "4"])) == [
        "1",
        "2",
        "4",
    ]
    assert [e["kind"] for e in feed_of(networks, start, {me})] == ["synced"]
    # a full sync that started after the pushes is the truth: 3 is back (a follow since)
    later = finalize(networks, me, [1, 2, 3], at=time.time(), started_at=time.time())
    assert (later.added, later.removed) == (1, 1)
    assert networks.freshness(me, "github", "followers")["streamed"] == 0
