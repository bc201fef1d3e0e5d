"""When the database's schema is behind the code's migrations (``state.migrate.lag``)."""

from __future__ import annotations

from state.migrate import heads, lag, lag_between

KNOWN = frozenset({"0001", "0002", "0003"})
HEAD = frozenset({"0003"})


def test_at_the_head_is_not_behind():
    assert lag_between({"0003"}, HEAD, KNOWN) is None


def test_never_migrated_says_so_and_what_to_run():
    for at in (None, set()):
        assert lag_between(at, HEAD, KNOWN).startswith("not migrated (run: flask --app service")


def test_an_older_revision_is_behind_and_names_both():
    assert lag_between({"0001"}, HEAD, KNOWN) == (
        "schema behind: at 0001, this code needs 0003 (run: flask --app service db upgrade)"
    )


def test_a_revision_this_code_does_not_know_is_a_newer_release_not_behind():
    assert lag_between({"0004"}, HEAD, KNOWN) is None


def test_the_real_migrations_have_one_head_and_it_is_not_behind():
    assert len(heads()) == 1
    assert lag(heads()) is None
