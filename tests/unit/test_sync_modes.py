"""The mode decision and the head logic (``sync.modes``), and the conditional cache's
entries (``state.etag_cache``)."""

from __future__ import annotations

import pytest

from providers.mastodon import Mastodon
from providers.provider import Page
from state.etag_cache import decode_entry, encode_entry
from sync import modes
from sync.modes import NetworkFreshness, head_bound, head_first_size, head_step, resolve_mode

NOW = 1_800_000_000.0
DAY = 86400


def network(count=1000, verified_ago=3600.0, head="h1", needs_full=False):
    verified = None if verified_ago is None else NOW - verified_ago
    return NetworkFreshness(count, verified, head, needs_full)


def choose(requested="auto", kind="head", net=None, stated=1000, every=DAY):
    return resolve_mode(requested, kind, net, stated, NOW, every)


# -- the mode decision ---------------------------------------------------------------------
def test_auto_is_incremental_within_full_sync_every():
    assert choose(net=network()) == modes.ModeChoice("incremental", "auto")


@pytest.mark.parametrize(
    ("net", "stated", "reason"),
    [
        (None, 1000, "never_synced"),
        (network(verified_ago=None), 1000, "never_verified"),
        (network(verified_ago=DAY + 1), 1000, "verification_due"),
        (network(verified_ago=DAY), 1000, "verification_due"),
        (network(needs_full=True), 1000, "needs_full"),
        (network(count=1000), 999, "count_went_down"),
    ],
)
def test_auto_runs_full_when(net, stated, reason):
    assert choose(net=net, stated=stated) == modes.ModeChoice("full", reason)


@pytest.mark.parametrize("requested", ["auto", "incremental"])
def test_a_provider_with_nothing_cheaper_is_always_full(requested):
    choice = choose(requested, kind=None, net=network())
    assert choice == modes.ModeChoice("full", "provider_offers_nothing_cheaper")


@pytest.mark.parametrize("requested", ["auto", "incremental"])
def test_a_network_read_from_another_account_is_read_in_full(requested):
    net = NetworkFreshness(1000, NOW - 60, "h1", account=" octocat")
    kept = resolve_mode(requested, "conditional", net, 1000, NOW, DAY, account=" octocat")
    assert kept.mode == "incremental"
    other = resolve_mode(requested, "conditional", net, 1000, NOW, DAY, account=" hubot")
    assert other == modes.ModeChoice("full", "account_changed")
    # a network kept before the account was recorded counts as the same account
    unknown = NetworkFreshness(1000, NOW - 60, "h1")
    assert resolve_mode(requested, "head", unknown, 1000, NOW, DAY, account=" x").mode == (
        "incremental"
    )


def test_the_account_key_names_the_instance_only_where_ids_are_per_instance():
    assert modes.account_key("109", "https://a.example", True) == "https://a.example 109"
    assert modes.account_key("109", None, True) == " 109"
    assert modes.account_key("did:plc:x", "https://pds.example", False) == " did:plc:x"


def test_full_is_full_whatever_is_stored():
    assert choose("full", net=network()).mode == "full"


def test_incremental_is_honoured_even_when_verification_is_due():
    assert choose("incremental", net=network(verified_ago=10 * DAY)).mode == "incremental"
    assert choose("incremental", net=network(needs_full=True)).mode == "incremental"


def test_incremental_needs_a_network_and_a_since_read_a_head():
    assert choose("incremental", net=None) == modes.ModeChoice("full", "never_synced")
    assert choose("incremental", kind="since", net=network(head=None)).reason == "no_head"
    assert choose("auto", kind="since", net=network(head=None)).mode == "full"
    assert choose("auto", kind="since", net=network(head="7")).mode == "incremental"


def test_a_count_that_grew_stays_incremental():
    assert choose(net=network(count=1000), stated=1100).mode == "incremental"


# -- heads -----------------------------------------------------------------------------------
def test_head_first_page_is_the_growth_and_a_margin_within_a_page():
    assert head_first_size(10_100, 10_000, 1000) == 100 + modes.HEAD_MARGIN
    assert head_first_size(10_000, 10_000, 1000) == modes.HEAD_MARGIN
    assert head_first_size(9_000, 10_000, 1000) == modes.HEAD_MARGIN
    assert head_first_size(50_000, 10_000, 1000) == 1000
    assert head_first_size(None, 10_000, 100) == modes.HEAD_MARGIN
    # connections a stream added sit among the newest: the first page reaches past them
    assert head_first_size(10_003, 10_000, 1000, streamed=8) == 3 + 8 + modes.HEAD_MARGIN
    assert head_first_size(10_000, 10_000, 100, streamed=500) == 100


def test_head_bound_is_a_tenth_of_the_network_at_least_a_page():
    assert head_bound(10_000, 100) == 1000
    assert head_bound(50, 100) == 100


def step(**changes):
    args = {
        "kind": "head",
        "met_known": True,
        "page_full": True,
        "has_next": True,
        "read_so_far": 105,
        "bound": 1000,
        "new_so_far": 100,
        "known_count": 10_000,
        "stated_count": 10_100,
        "check_count": True,
    }
    args.update(changes)
    return head_step(**args)


def test_a_head_ends_at_the_first_known_connection():
    assert step() == modes.HeadStep("done")


def test_a_head_goes_on_until_it_meets_a_known_one():
    assert step(met_known=False, new_so_far=105) == modes.HeadStep("go_on")


def test_a_head_past_its_bound_reads_on_in_full():
    assert step(met_known=False, read_so_far=1000) == modes.HeadStep("full", "head_bound")


def test_a_head_that_read_the_whole_list_is_a_full_read():
    assert step(met_known=False, has_next=False).action == "full"


def test_the_count_check_rejects_a_head_that_does_not_add_up():
    # a removal hidden by an addition: 100 new, but the profile says 10,099
    assert step(stated_count=10_099) == modes.HeadStep("full", "count_mismatch")
    # asked for incremental explicitly: no check
    assert step(stated_count=10_099, check_count=False) == modes.HeadStep("done")


def test_a_since_read_ends_at_its_first_short_page():
    since = {"kind": "since", "met_known": False}
    assert step(**since, page_full=False) == modes.HeadStep("done")
    assert step(**since, page_full=True) == modes.HeadStep("go_on")
    assert step(**since, page_full=True, has_next=False) == modes.HeadStep("done")
    assert step(**since, page_full=True, read_so_far=1000) == modes.HeadStep("full", "head_bound")


def test_head_cursors_round_trip():
    cursor = modes.with_head(105, "followers:")
    assert cursor == "h105|followers:"
    assert modes.split_head(cursor) == (105, "followers:")
    assert modes.split_head("followers:abc") == (None, "followers:abc")
    assert modes.split_head("/api/v1/accounts/1/followers?limit=80") == (
        None,
        "/api/v1/accounts/1/followers?limit=80",
    )


def test_mastodon_reads_on_above_the_prev_link_with_min_id():
    provider = Mastodon("https://mastodon.example")
    headers = {
        "link": "<https://mastodon.example/api/v1/accounts/1/followers?limit=80&max_id=70>;"
        ' rel="next", <https://mastodon.example/api/v1/accounts/1/followers?limit=80'
        '&since_id=97>; rel="prev"'
    }
    page = provider.parse_page([{"id": "5", "acct": "a"}], headers, "/api/v1/accounts/1/followers")
    assert page.head_marker == "97"
    assert page.newer_cursor == "/api/v1/accounts/1/followers?limit=80&min_id=97"
    assert (
        provider.head_cursor("1", None, "97") == "/api/v1/accounts/1/followers?limit=80&min_id=97"
    )
    # an empty page above the head is not a hidden network
    empty = provider.parse_page([], {}, "/api/v1/accounts/1/followers?limit=80&min_id=97")
    assert provider.page_anomaly(empty, "/api/v1/accounts/1/followers?min_id=97", 10) == ""


# -- the conditional cache's entries ----------------------------------------------------------
def test_a_cache_entry_round_trips():
    page = Page([("1", "ann"), ("22", "bob")], fan_out=("/u?page=2", "/u?page=3"))
    cached = decode_entry(encode_entry('W/"abc"', page))
    assert cached.etag == 'W/"abc"'
    assert cached.page.connections == page.connections
    assert cached.page.fan_out == page.fan_out
    empty = decode_entry(encode_entry('"e"', Page([], next_cursor="/n")))
    assert empty.page.connections == [] and empty.page.next_cursor == "/n"


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"no-separator",
        b'"e"\0not zlib',
        b"\0" + b"x",
        b'"e"\0x\x9c\x03\x00\x00\x00\x00\x01',
    ],
)
def test_a_garbled_cache_entry_is_not_used(raw):
    assert decode_entry(raw) is None


def test_github_page_one_replayed_reaches_every_page_of_the_new_count():
    from providers.github import GitHub

    provider = GitHub("https://api.github.com")
    first = "/users/ann/followers?per_page=100&page=1"
    kept = Page(
        [("1", "a")], fan_out=tuple(f"/user/7/followers?per_page=100&page={n}" for n in (2, 3))
    )
    grown = provider.replayed_page(kept, first, 350)
    assert grown.fan_out[-1] == "/user/7/followers?per_page=100&page=4"
    assert len(grown.fan_out) == 3 and grown.connections == kept.connections
    assert provider.replayed_page(kept, first, 250) is kept  # nothing more to reach
    alone = provider.replayed_page(Page([("1", "a")]), first, 150)  # one page grew to two
    assert alone.fan_out == ("/users/ann/followers?per_page=100&page=2",)
    later = "/user/7/followers?per_page=100&page=2"
    assert provider.replayed_page(kept, later, 999) is kept
