"""The sync store's atomic steps, against a real Redis."""
from __future__ import annotations

import threading

import pytest

from state.store import SyncStore


class Clock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(redis_client, key_prefix, clock):
    return SyncStore(redis_client, key_prefix, clock=clock)


def begin(store, user="u-1", force=False, freshness=900):
    return store.begin_sync(user_id=user, provider="github", account_id="octo", queue="normal",
                            trigger="webhook", force=force, freshness_s=freshness, stale_s=3600)


def run_sync(store, ticket, pages):
    """Launch every page from round one, then store them in order."""
    cursors = [f"p{i}" for i in range(len(pages))]
    assert store.add_pending(ticket.sync_id, "", cursors) == ["new"] * len(cursors)
    results = [store.complete_page(ticket.sync_id, c, conns) for c, conns in zip(cursors, pages)]
    return results


def conns(*ids):
    return [(str(i), f"h{i}") for i in ids]


def test_begin_creates_one_sync(store):
    ticket = begin(store)
    assert ticket.created and ticket.status == "queued"
    record = store.get_sync(ticket.sync_id)
    assert record["status"] == "queued" and record["user_id"] == "u-1"


def test_second_trigger_gets_the_inflight_sync(store):
    first = begin(store)
    second = begin(store, force=True)
    assert not second.created and second.sync_id == first.sync_id


def test_concurrent_triggers_start_exactly_one(store):
    tickets = []
    threads = [threading.Thread(target=lambda: tickets.append(begin(store))) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(t.created for t in tickets) == 1
    assert len({t.sync_id for t in tickets}) == 1


def test_last_page_finalizes_and_swaps(store):
    ticket = begin(store)
    results = run_sync(store, ticket, [conns(1, 2), conns(3)])
    assert results == ["stored", "succeeded"]
    meta, page, cursor = store.network_page("github", "u-1", None, 10)
    assert [c["id"] for c in page] == ["1", "2", "3"] and cursor is None
    assert meta["count"] == "3"
    assert store.changes("github", "u-1")["added"] == ["1", "2", "3"]


def test_redelivered_page_is_a_no_op(store):
    ticket = begin(store)
    store.add_pending(ticket.sync_id, "", ["p0", "p1"])
    assert store.complete_page(ticket.sync_id, "p0", conns(1)) == "stored"
    assert store.complete_page(ticket.sync_id, "p0", conns(1, 99)) == "duplicate"
    assert store.get_sync(ticket.sync_id)["pages_fetched"] == "1"


def test_add_pending_tells_new_rerun_and_repeat(store):
    ticket = begin(store)
    store.add_pending(ticket.sync_id, "", ["p0"])
    assert store.add_pending(ticket.sync_id, "p0", ["p1"]) == ["new"]
    assert store.add_pending(ticket.sync_id, "p0", ["p1"]) == ["rerun"]  # p0 redelivered
    assert store.add_pending(ticket.sync_id, "p5", ["p1"]) == ["repeat"]  # provider repeated a cursor


def test_diff_on_resync(store, clock):
    run_sync(store, begin(store), [conns(1, 2, 3)])
    clock.now += 1000
    run_sync(store, begin(store), [conns(2, 3, 4, 5)])
    changes = store.changes("github", "u-1")
    assert changes["added"] == ["4", "5"] and changes["removed"] == ["1"]


def test_fresh_network_is_not_synced_again(store, clock):
    first = begin(store)
    run_sync(store, first, [conns(1)])
    clock.now += 10
    again = begin(store)
    assert again.status == "fresh" and not again.created and again.sync_id == first.sync_id
    assert begin(store, force=True).created


def test_failure_keeps_previous_network(store, clock):
    run_sync(store, begin(store), [conns(1, 2)])
    clock.now += 1000
    ticket = begin(store)
    store.add_pending(ticket.sync_id, "", ["p0", "p1"])
    store.complete_page(ticket.sync_id, "p0", conns(7))
    assert store.fail(ticket.sync_id, "needs_reauth", "bad_credentials", "Bad credentials")
    assert store.complete_page(ticket.sync_id, "p1", conns(8)) == "inactive"
    meta, page, _ = store.network_page("github", "u-1", None, 10)
    assert [c["id"] for c in page] == ["1", "2"]
    assert store.get_sync(ticket.sync_id)["status"] == "needs_reauth"
    assert begin(store).created  # nothing in flight any more


def test_empty_network(store):
    assert run_sync(store, begin(store), [[]]) == ["succeeded"]
    meta, page, cursor = store.network_page("github", "u-1", None, 10)
    assert meta["count"] == "0" and page == []


def test_network_paging(store):
    run_sync(store, begin(store), [conns(*range(10, 35))])
    seen, cursor = [], None
    while True:
        _, page, cursor = store.network_page("github", "u-1", cursor, 10)
        seen += [c["id"] for c in page]
        if cursor is None:
            break
    assert seen == [str(i) for i in range(10, 35)]


def test_a_guard_reason_marks_the_sync_partial(store):
    ticket = begin(store)
    store.add_pending(ticket.sync_id, "", ["p0", "p1"])
    store.complete_page(ticket.sync_id, "p0", conns(1))
    assert store.complete_page(ticket.sync_id, "p1", conns(2), "page_limit") == "partial"
    assert store.get_sync(ticket.sync_id)["partial_reason"] == "page_limit"
    assert store.network_page("github", "u-1", None, 10)[0]["status"] == "partial"


def test_stale_networks_stalest_first(store, clock):
    for user in ("a", "b", "c"):
        run_sync(store, begin(store, user=user), [conns(1)])
        clock.now += 100
    assert store.stale_networks(clock.now - 150, None, 10) == [("github", "a"), ("github", "b")]
