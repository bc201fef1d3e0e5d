"""The pagination planner: which cursors round two starts with, and the page guard."""

from __future__ import annotations

from providers.provider import Page, Pagination, Provider


class OffsetKnown(Provider):
    NAME = "fake"
    PAGE_SIZE = 100
    PAGINATION = Pagination.OFFSET_KNOWN


class OffsetUnknown(OffsetKnown):
    PAGINATION = Pagination.OFFSET_UNKNOWN
    LANES = 3


class Cursor(OffsetKnown):
    PAGINATION = Pagination.CURSOR

    def first_cursor(self, account_id):
        return f"first:{account_id}"


def offsets(cursors):
    return [Provider.cursor_offset(c) for c in cursors]


def test_known_size_launches_every_page_at_once():
    plan = OffsetKnown("http://x").initial_cursors("a", 250)
    assert offsets(plan) == [0, 100, 200]


def test_known_size_edges():
    provider = OffsetKnown("http://x")
    assert offsets(provider.initial_cursors("a", 0)) == [0]  # still look once
    assert offsets(provider.initial_cursors("a", 100)) == [0]
    assert offsets(provider.initial_cursors("a", 101)) == [0, 100]


def test_unknown_size_opens_a_window_of_lanes():
    assert offsets(OffsetUnknown("http://x").initial_cursors("a", None)) == [0, 100, 200]


def test_cursor_pagination_starts_with_one_page():
    assert Cursor("http://x").initial_cursors("a", 5000) == ["first:a"]


def test_page_limit_allows_slack():
    provider = OffsetKnown("http://x")
    assert provider.page_limit(None) is None
    assert provider.page_limit(1000) == 13
    assert provider.page_limit(100_000) == 1100


def test_followups_prefer_fan_out():
    assert Page([], next_cursor="n").followups == ["n"]
    assert Page([], next_cursor="n", fan_out=("a", "b")).followups == ["a", "b"]
    assert Page([]).followups == []


def test_relative_refuses_other_origins():
    provider = Cursor("http://127.0.0.1:8900/github")
    assert (
        provider.relative("http://127.0.0.1:8900/github/users/a?page=2") == "/github/users/a?page=2"
    )
    assert provider.relative("http://other:8900/github/users/a") is None
