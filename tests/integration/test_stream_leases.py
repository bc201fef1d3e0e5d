"""How ``streams`` processes share the channels (``sync.streams.role``), against a real
Redis: one holder for Jetstream and X, Mastodon shards split by fair share."""

from __future__ import annotations

from types import SimpleNamespace

from state.liveness import Liveness
from sync.streams.role import StreamsRole, shard_of

SHARDS = 8


def role(redis_client, key_prefix, member: str) -> StreamsRole:
    settings = SimpleNamespace(
        key_prefix=key_prefix,
        streams=("bluesky", "mastodon", "twitter"),
        twitter_activity_token="app-token",
        streams_shards=SHARDS,
        streams_debounce_seconds=1.0,
        callback_url=None,
    )
    svc = SimpleNamespace(settings=settings, redis=redis_client)
    return StreamsRole(svc, "redis://unused", member=member)


ROSTER = {
    "bluesky": {"did:plc:a": "u1"},
    "twitter": {"42": "u2"},
    "mastodon": {str(10**17 + i): f"u{i}" for i in range(40)},
}


def mastodon_held(channels: set[str]) -> set[str]:
    return {name.split(":", 1)[1] for name in channels if name.startswith("mastodon:")}


def test_one_holder_per_singleton_and_mastodon_shards_split_fairly(redis_client, key_prefix):
    first, second = role(redis_client, key_prefix, "a"), role(redis_client, key_prefix, "b")
    alone = first._leases(ROSTER)
    assert {"jetstream", "x"} <= alone
    assert mastodon_held(alone) == set(ROSTER["mastodon"])  # alone: every shard
    joined = second._leases(ROSTER)  # two members now: at most half each
    assert not {"jetstream", "x"} & joined  # held by the first
    after = first._leases(ROSTER)  # the first lets go of what passes its share
    again = second._leases(ROSTER)  # and the second takes it
    assert {"jetstream", "x"} <= after
    mine, theirs = mastodon_held(after), mastodon_held(again)
    assert mine.isdisjoint(theirs) and mine | theirs == set(ROSTER["mastodon"])
    assert sum(1 for h in first.held if h.startswith("streams:mastodon:")) == SHARDS // 2
    for uid in theirs:
        assert f"streams:mastodon:{shard_of(uid, SHARDS)}" in second.held


def test_a_lease_given_up_on_leaving_is_taken_at_once(redis_client, key_prefix):
    first, second = role(redis_client, key_prefix, "a"), role(redis_client, key_prefix, "b")
    first._leases(ROSTER)
    first._leave()
    taken = second._leases(ROSTER)
    assert {"jetstream", "x"} <= taken
    lease = Liveness(redis_client, key_prefix).lease_holder("streams:jetstream")
    assert lease == "b"


def test_no_x_channel_without_the_activity_token(redis_client, key_prefix):
    tokenless = role(redis_client, key_prefix, "a")
    tokenless.settings = tokenless.svc.settings = SimpleNamespace(
        **{**vars(tokenless.settings), "twitter_activity_token": None}
    )
    assert "x" not in tokenless._leases(ROSTER)
