"""The sync store's atomic steps, against a real Redis."""

from __future__ import annotations

import threading

import pytest

from state.store import SyncStore

#: state against a real Redis: also run on a Redis Cluster (make integration-cluster)
pytestmark = pytest.mark.cluster


@pytest.fixture
def store(redis_client, key_prefix, clock):
    return SyncStore(redis_client, key_prefix, clock=clock)


def begin(store, user="u-1", force=False, freshness=900, relation="followers"):
    return store.begin_sync(
        user_id=user,
        provider="github",
        relation=relation,
        account_id="octo",
        queue="normal",
        trigger="webhook",
        force=force,
        freshness_s=freshness,
        stale_s=3600,
    )


def run_sync(store, ticket, pages):
    """Launch every page from round one, store them in order, and finish as the engine
    does after PostgreSQL committed (``sync.finalize``)."""
    cursors = [f"p{i}" for i in range(len(pages))]
    assert store.add_pending(ticket.sync_id, "", cursors) == ["new"] * len(cursors)
    results = [store.complete_page(ticket.sync_id, c, conns) for c, conns in zip(cursors, pages)]
    if results[-1] == "finalize":
        record = store.get_sync(ticket.sync_id)
        count = len(dict(store.staged_connections(ticket.sync_id)))
        assert store.finish(ticket.sync_id, record["finalizing"], count, count, 0, True)
        results[-1] = store.get_sync(ticket.sync_id)["status"]
    return results


def conns(*ids):
    return [(str(i), f"h{i}") for i in ids]


def test_begin_creates_one_sync(store):
    ticket = begin(store)
    assert ticket.created and ticket.status == "queued" and ticket.relation == "followers"
    record = store.get_sync(ticket.sync_id)
    assert record["status"] == "queued" and record["user_id"] == "u-1"
    assert record["relation"] == "followers"


def test_second_trigger_gets_the_inflight_sync(store):
    first = begin(store)
    second = begin(store, force=True)
    assert not second.created and second.sync_id == first.sync_id


def test_each_relation_is_a_sync_of_its_own(store):
    followers, following = begin(store), begin(store, relation="following")
    assert followers.created and following.created and followers.sync_id != following.sync_id
    run_sync(store, followers, [conns(1)])
    assert begin(store).status == "fresh"
    assert not begin(store, relation="following").created  # still in flight


def test_concurrent_triggers_start_exactly_one(store):
    tickets = []
    threads = [threading.Thread(target=lambda: tickets.append(begin(store))) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(t.created for t in tickets) == 1
    assert len({t.sync_id for t in tickets}) == 1


def test_last_page_asks_for_finalization_and_stays_running(store):
    ticket = begin(store)
    store.add_pending(ticket.sync_id, "", ["p0", "p1"])
    assert store.complete_page(ticket.sync_id, "p0", conns(1, 2)) == "completed"
    assert store.complete_page(ticket.sync_id, "p1", conns(3)) == "finalize"
    record = store.get_sync(ticket.sync_id)
    assert record["status"] == "queued" and record["finalizing"] == "succeeded"
    assert sorted(store.staged_connections(ticket.sync_id)) == conns(1, 2, 3)
    # too late to fail: PostgreSQL may be committing this network
    assert not store.fail(ticket.sync_id, "failed", "internal_error", "x")


def test_finish_is_final_once_and_drops_the_staging(store, redis_client):
    ticket = begin(store)
    assert run_sync(store, ticket, [conns(1, 2)]) == ["succeeded"]
    record = store.get_sync(ticket.sync_id)
    assert record["connections_fetched"] == "2" and record["added"] == "2"
    assert "finalizing" not in record
    assert not store.finish(ticket.sync_id, "succeeded", 2, 2, 0, True)  # a retry: nothing
    assert list(store.staged_connections(ticket.sync_id)) == []
    assert not redis_client.keys(f"{store.keys.user('github', 'u-1').base}:sync:*:staging_h")
    assert store.last_sync("github", "u-1", "followers")["count"] == "2"


def test_redelivered_page_is_a_no_op(store):
    ticket = begin(store)
    store.add_pending(ticket.sync_id, "", ["p0", "p1"])
    assert store.complete_page(ticket.sync_id, "p0", conns(1)) == "completed"
    assert store.complete_page(ticket.sync_id, "p0", conns(1, 99)) == "duplicate"
    assert store.get_sync(ticket.sync_id)["pages_fetched"] == "1"


def test_add_pending_tells_new_rerun_and_repeat(store):
    ticket = begin(store)
    store.add_pending(ticket.sync_id, "", ["p0"])
    assert store.add_pending(ticket.sync_id, "p0", ["p1"]) == ["new"]
    assert store.add_pending(ticket.sync_id, "p0", ["p1"]) == ["rerun"]  # p0 redelivered
    assert store.add_pending(ticket.sync_id, "p5", ["p1"]) == [
        "repeat"
    ]  # provider repeated a cursor


def test_fresh_network_is_not_synced_again(store, clock):
    first = begin(store)
    run_sync(store, first, [conns(1)])
    clock.now += 10
    again = begin(store)
    assert again.status == "fresh" and not again.created and again.sync_id == first.sync_id
    assert begin(store, force=True).created


def test_failure_drops_the_staging(store, clock):
    ticket = begin(store)
    store.add_pending(ticket.sync_id, "", ["p0", "p1"])
    store.complete_page(ticket.sync_id, "p0", conns(7))
    assert store.fail(ticket.sync_id, "needs_reauth", "bad_credentials", "Bad credentials")
    assert store.complete_page(ticket.sync_id, "p1", conns(8)) == "inactive"
    assert list(store.staged_connections(ticket.sync_id)) == []
    assert store.get_sync(ticket.sync_id)["status"] == "needs_reauth"
    assert begin(store).created  # nothing in flight any more


def test_a_guard_reason_marks_the_sync_partial(store):
    ticket = begin(store)
    store.add_pending(ticket.sync_id, "", ["p0", "p1"])
    store.complete_page(ticket.sync_id, "p0", conns(1))
    assert store.complete_page(ticket.sync_id, "p1", conns(2), "page_limit") == "finalize"
    assert store.get_sync(ticket.sync_id)["finalizing"] == "partial"


def test_stale_networks_stalest_first(store, clock):
    for user in ("a", "b", "c"):
        run_sync(store, begin(store, user=user), [conns(1)])
        clock.now += 100
    assert store.stale_networks(clock.now - 150, None, 10) == [
        ("github", "a", "followers"),
        ("github", "b", "followers"),
    ]
