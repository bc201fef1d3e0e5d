"""state.networks against a real PostgreSQL: finalization, members, the change feed."""

from __future__ import annotations

import secrets
import threading

import pytest

from state.networks import NetworkStore


@pytest.fixture(scope="module")
def networks(database_url):
    store = NetworkStore(database_url, max_connections=60)
    yield store
    store.close()


def user() -> str:
    return "nu-" + secrets.token_hex(5)


def conns(*ids):
    return [(str(i), f"h{i}") for i in ids]


def finalize(
    networks,
    user_id,
    ids,
    sync_id=None,
    relation="followers",
    provider="github",
    mode="full",
    at=1_700_000_000.0,
    **extra,
):
    return networks.finalize(
        sync_id=sync_id or "s_" + secrets.token_hex(8),
        user_id=user_id,
        provider=provider,
        relation=relation,
        status="succeeded",
        finished_at=at,
        connections=conns(*ids),
        mode=mode,
        **extra,
    )


def feed_of(networks, after, user_ids):
    entries, cursor = [], after
    while True:
        page, cursor = networks.feed(cursor, 1000)
        if not page:
            return [e for e in entries if e["user_id"] in user_ids]
        entries += page


def feed_start(networks) -> int:
    cursor = 0
    while True:
        page, cursor = networks.feed(cursor, 1000)
        if not page:
            return cursor


def test_first_sync_is_initial_and_a_resync_logs_its_diff(networks):
    me, start = user(), feed_start(networks)
    first = finalize(networks, me, [1, 2, 3])
    assert (first.count, first.added, first.removed, first.initial) == (3, 3, 0, True)
    second = finalize(networks, me, [2, 3, 4, 5])
    assert (second.count, second.added, second.removed, second.initial) == (4, 2, 1, False)
    entries = feed_of(networks, start, {me})
    kinds = [(e["kind"], e["sync_id"], (e["connection"] or {}).get("id")) for e in entries]
    assert kinds == [
        ("synced", first.sync_id, None),
        ("synced", second.sync_id, None),
        ("added", second.sync_id, "4"),
        ("added", second.sync_id, "5"),
        ("removed", second.sync_id, "1"),
    ]
    assert entries[0]["initial"]
    assert entries[0]["counts"] == {"count": 3, "added": 3, "removed": 0, "mode": "full"}
    assert entries[1]["counts"] == {"count": 4, "added": 2, "removed": 1, "mode": "full"}
    assert {e["source"] for e in entries} == {"sync"}
    meta, page, cursor = networks.network_page(me, "github", "followers", None, 10)
    assert [c["id"] for c in page] == ["2", "3", "4", "5"] and cursor is None
    assert meta["sync_id"] == second.sync_id and meta["count"] == 4
    changes = networks.sync_changes_page(me, "github", "followers", None, 10)
    assert changes["added"] == ["4", "5"] and changes["removed"] == ["1"]


def test_an_incremental_sync_adds_and_never_removes_nor_verifies(networks):
    me, start = user(), feed_start(networks)
    finalize(networks, me, [1, 2, 3], at=1_700_000_000.0, stated_count=3, head="h-3")
    meta = networks.network_page(me, "github", "followers", None, 10)[0]
    assert meta["verified_at"] == meta["updated_at"] == 1_700_000_000.0
    # a head that read 4 and 3: 4 is added, 1 and 2 (not read) stay
    cost = {"calls": 2, "counted_calls": 2, "not_modified": 0, "resources": 0, "usd": 0.0}
    second = finalize(
        networks, me, [4, 3], mode="incremental", at=1_700_000_100.0, stated_count=4, cost=cost
    )
    assert (second.count, second.added, second.removed, second.mode) == (4, 1, 0, "incremental")
    meta = networks.network_page(me, "github", "followers", None, 10)[0]
    assert meta["verified_at"] == 1_700_000_000.0 and meta["updated_at"] == 1_700_000_100.0
    fresh = networks.freshness(me, "github", "followers")
    assert fresh == {
        "count": 4,
        "verified_at": 1_700_000_000.0,
        "head": "h-3",
        "needs_full": False,
        "stated_count": 4,
        "streamed": 0,
        "account": None,  # finalized without naming the account it was read from
    }
    # nothing new: updated_at stays
    finalize(networks, me, [4], mode="incremental", at=1_700_000_200.0)
    meta = networks.network_page(me, "github", "followers", None, 10)[0]
    assert meta["updated_at"] == 1_700_000_100.0
    assert networks.known_ids(me, "github", "followers", ["1", "4", "9"]) == {"1", "4"}
    entries = feed_of(networks, start, {me})
    assert [(e["kind"], (e["connection"] or {}).get("id")) for e in entries] == [
        ("synced", None),
        ("synced", None),
        ("added", "4"),
        ("synced", None),
    ]
    assert entries[1]["counts"] == {
        "count": 4,
        "added": 1,
        "removed": 0,
        "mode": "incremental",
        "cost": cost,
    }
    # a repeated finalization answers the first one's result, mode included
    again = finalize(networks, me, [4, 3], sync_id=second.sync_id, mode="incremental")
    assert again.already and again.mode == "incremental" and again.added == 1
    # the stale re-sync picks by verified_at
    stale = networks.stale_networks(1_700_000_050.0, "github", 100_000)
    assert (("github", me, "followers")) in stale
    assert ("github", me, "followers") not in networks.stale_networks(1_699_999_999.0, None, 10)


def test_a_finalization_retried_does_nothing_twice(networks):
    me, start = user(), feed_start(networks)
    first = finalize(networks, me, [1, 2], sync_id="s_retry_" + me)
    again = finalize(networks, me, [7, 8, 9], sync_id="s_retry_" + me)
    assert again.already and (again.count, again.added) == (first.count, first.added)
    assert [c["id"] for c in networks.network_page(me, "github", "followers", None, 10)[1]] == [
        "1",
        "2",
    ]
    assert len(feed_of(networks, start, {me})) == 1


def test_relations_are_separate_networks_and_paging_is_stable(networks):
    me = user()
    finalize(networks, me, range(10, 35))
    finalize(networks, me, [1], relation="following")
    seen, cursor = [], None
    while True:
        _, page, cursor = networks.network_page(me, "github", "followers", cursor, 10)
        seen += [c["id"] for c in page]
        if cursor is None:
            break
    assert seen == [str(i) for i in range(10, 35)]
    assert networks.network_page(me, "github", "following", None, 10)[0]["count"] == 1
    assert networks.network_page(me, "github", "followers", None, 10)[0]["count"] == 25
    assert networks.network_page(user(), "github", "followers", None, 10) is None


def test_an_empty_network_is_a_network(networks):
    me = user()
    finalize(networks, me, [])
    meta, page, cursor = networks.network_page(me, "github", "followers", None, 10)
    assert meta["count"] == 0 and page == [] and cursor is None


def test_members_and_member_joined(networks):
    """Alice follows bob and carol; carol links later: alice hears carol joined."""
    alice, bob, carol, start = user(), user(), user(), feed_start(networks)
    bob_uid, carol_uid = "9" + secrets.token_hex(4), "8" + secrets.token_hex(4)
    assert (
        networks.link_account(
            user_id=bob, provider="github", account_id="bob", provider_uid=bob_uid
        )
        == 0
    )  # nobody holds bob yet
    finalize(networks, alice, [bob_uid, carol_uid, "111"])
    members, cursor = networks.members_page(alice, "github", "followers", None, 10)
    assert members == [{"id": bob_uid, "handle": f"h{bob_uid}", "user_id": bob}]
    assert (
        networks.link_account(
            user_id=carol, provider="github", account_id="carol", provider_uid=carol_uid
        )
        == 1
    )
    assert (
        networks.link_account(
            user_id=carol, provider="github", account_id="carol", provider_uid=carol_uid
        )
        == 0
    )  # known already: no news
    page, cursor = networks.members_page(alice, "github", "followers", None, 1)
    rest, end = networks.members_page(alice, "github", "followers", cursor, 1)
    assert {m["user_id"] for m in page + rest} == {bob, carol} and end is None
    joined = [e for e in feed_of(networks, start, {alice}) if e["kind"] == "member_joined"]
    assert [(e["member_user_id"], e["connection"]["id"]) for e in joined] == [(carol, carol_uid)]
    assert networks.members_page(user(), "github", "followers", None, 10) is None


def test_fifty_readers_during_a_finalization_see_old_or_new_never_a_mix(networks):
    me = user()
    old_ids, new_ids = list(range(0, 3000)), list(range(10, 3010))  # 10 removed, 10 added
    old = finalize(networks, me, old_ids)
    start = feed_start(networks)
    first_page = {
        sync_id: sorted(map(str, ids))[:1000] for sync_id, ids in ((old.sync_id, old_ids),)
    }
    seen, stop = [], threading.Event()

    def read():
        while not stop.is_set():
            meta, page, _ = networks.network_page(me, "github", "followers", None, 1000)
            entries, _ = networks.feed(start, 1000)
            mine = [e for e in entries if e["user_id"] == me]
            seen.append(
                (
                    meta["sync_id"],
                    tuple(c["id"] for c in page),
                    len(mine),
                    mine[0]["kind"] if mine else None,
                )
            )

    readers = [threading.Thread(target=read) for _ in range(50)]
    for thread in readers:
        thread.start()
    new = finalize(networks, me, new_ids)
    stop.set()
    for thread in readers:
        thread.join()
    first_page[new.sync_id] = sorted(map(str, new_ids))[:1000]
    assert seen
    for sync_id, page, feed_entries, first_kind in seen:
        assert list(page) == first_page[sync_id]  # a whole network, old or new
        assert (feed_entries, first_kind) in ((0, None), (21, "synced"))  # none or all 21


def test_a_mastodon_id_means_someone_only_on_its_instance(networks):
    """Account id 4242 on a.example and on b.example are two people (``0005_federation``):
    both stay linked, and a network read on a.example has a.example's 4242 as its member."""
    alice, on_a, on_b, start = user(), user(), user(), feed_start(networks)
    uid = "4" + secrets.token_hex(4)
    for who, instance in ((alice, "a.example"), (on_a, "a.example"), (on_b, "b.example")):
        own = uid if who != alice else "1" + secrets.token_hex(4)
        networks.link_account(
            user_id=who, provider="mastodon", account_id=own, provider_uid=own, instance=instance
        )
    finalize(networks, alice, [uid, "111"], provider="mastodon")
    members, _ = networks.members_page(alice, "mastodon", "followers", None, 10)
    assert members == [{"id": uid, "handle": f"h{uid}", "user_id": on_a}]
    # a newly linked 4242 on a third instance joins no network read on a.example
    newcomer = user()
    joined = networks.link_account(
        user_id=newcomer, provider="mastodon", account_id=uid, provider_uid=uid,
        instance="c.example",
    )  # fmt: skip
    assert joined == 0
    assert not [e for e in feed_of(networks, start, {alice}) if e["kind"] == "member_joined"]
