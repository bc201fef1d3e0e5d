"""The spend budget (state.spend) and its settings: no sequence of calls, no number of workers passes it."""

from __future__ import annotations

import datetime
import random
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state.spend import MICRO, DayTotals, SpendBook, next_utc_midnight, to_micro, utc_day
from state.spend_settings import (
    SpendSettings,
    SpendSettingsError,
    parse_budget,
    parse_price,
)
from tests.conftest import ManualClock, redis_connect

#: state against a real Redis: also run on a Redis Cluster (make integration-cluster)
pytestmark = pytest.mark.cluster

NOON = datetime.datetime(2026, 5, 28, 12, tzinfo=datetime.UTC).timestamp()


# -- PRICE_<PROVIDER>, BUDGET_<PROVIDER> ----------------------------------------------
def test_prices_default_to_the_provider_files_and_budgets_to_none():
    found = SpendSettings.from_env({})
    assert found.price("twitter") == 0.010 and found.price("github") == 0.0
    assert found.budget("twitter") is None


def test_price_and_budget_from_the_environment():
    found = SpendSettings.from_env(
        {"PRICE_TWITTER": "0.001", "BUDGET_TWITTER": "5.00/day", "BUDGET_GITHUB": "5/day"}
    )
    assert found.price("twitter") == 0.001
    assert found.budget("twitter") == 5.0 == found.budget("github")
    assert SpendSettings.from_env({"BUDGET_TWITTER": ""}).budget("twitter") is None


@pytest.mark.parametrize(
    "raw", ["5", "5 per day", "-1/day", "abc/day", "5/week", "1e3/day", "$5/day"]
)
def test_a_malformed_budget_fails_naming_its_variable(raw):
    with pytest.raises(SpendSettingsError, match="BUDGET_TWITTER"):
        SpendSettings.from_env({"BUDGET_TWITTER": raw})


@pytest.mark.parametrize("raw", ["free", "-0.01", "1e-2", "nan", "0.01/day"])
def test_a_malformed_price_fails_naming_its_variable(raw):
    with pytest.raises(SpendSettingsError, match="PRICE_TWITTER"):
        SpendSettings.from_env({"PRICE_TWITTER": raw})


def test_a_variable_naming_no_provider_fails_naming_it():
    with pytest.raises(SpendSettingsError, match="PRICE_TWITER names no provider"):
        SpendSettings.from_env({"PRICE_TWITER": "0.01"})
    with pytest.raises(SpendSettingsError, match="BUDGET_X"):
        SpendSettings.from_env({"BUDGET_X": "5/day"})


def test_parsers_alone():
    assert parse_price("PRICE_X", " 0.010 ") == 0.01
    assert parse_budget("BUDGET_X", "12.5 / DAY") == 12.5


# -- reserve at the worst case, settle with what was billed -------------------------------
@pytest.fixture
def clock():
    return ManualClock(NOON)


@pytest.fixture
def book(redis_client, key_prefix, clock):
    return SpendBook(redis_client, key_prefix, clock)


def test_amounts_are_whole_micro_dollars_rounded_up():
    assert to_micro(1000 * 0.010) == 10 * MICRO
    assert to_micro(0.0000001) == 1
    assert to_micro(0) == 0


def test_a_reservation_holds_the_worst_case_and_the_settle_counts_what_was_billed(book):
    held = book.reserve("twitter", 10.0, budget_usd=25.0)
    assert held.granted and held.day == "2026-05-28"
    assert book.totals("twitter").reserved_micro == 10 * MICRO
    day = book.settle(held, "twitter", 3.5, resources=350)
    assert (day.spent_usd, day.reserved_usd, day.calls, day.resources) == (3.5, 0.0, 1, 350)


def test_a_call_that_would_pass_the_budget_waits_for_the_next_utc_day(book, clock):
    book.settle(book.reserve("twitter", 10.0, 25.0), "twitter", 10.0, resources=1000)
    book.settle(book.reserve("twitter", 10.0, 25.0), "twitter", 10.0, resources=1000)
    refused = book.reserve("twitter", 10.0, 25.0)
    assert not refused.granted and not refused.never
    assert refused.wait_s == pytest.approx(12 * 3600)
    clock.now = next_utc_midnight(NOON) + 1
    assert book.reserve("twitter", 10.0, 25.0).granted  # a new day, a new budget


def test_open_reservations_make_a_call_look_again_soon(book):
    first = book.reserve("twitter", 10.0, 15.0)
    refused = book.reserve("twitter", 10.0, 15.0)
    assert refused.wait_s == pytest.approx(1.0)  # the first may settle for less
    book.settle(first, "twitter", 1.0, resources=100)
    assert book.reserve("twitter", 10.0, 15.0).granted


def test_a_call_dearer_than_a_day_s_budget_never_fits(book):
    refused = book.reserve("twitter", 10.0, 5.0)
    assert refused.never and refused.wait_s > 0


def test_a_settle_sent_twice_counts_once(book):
    held = book.reserve("twitter", 10.0, 25.0)
    book.settle(held, "twitter", 4.0, resources=400)
    again = book.settle(held, "twitter", 4.0, resources=400)
    assert (again.spent_usd, again.calls) == (4.0, 1)


def test_a_call_out_across_midnight_is_billed_to_the_day_it_was_reserved_in(book, clock):
    clock.now = next_utc_midnight(NOON) - 0.5
    held = book.reserve("twitter", 10.0, 25.0)
    clock.now += 1.0
    assert book.settle(held, "twitter", 2.0, resources=200).day == "2026-05-28"
    assert book.totals("twitter").spent_micro == 0  # the new day


def test_a_free_provider_is_counted_without_a_reservation(book):
    day = book.settle(None, "github", 0.0, counted=False, not_modified=True)
    assert (day.calls, day.counted_calls, day.not_modified, day.spent_micro) == (1, 0, 1, 0)


class FakeLedger:
    def __init__(self, rows):
        self.rows = rows

    def read(self, provider, day):
        return self.rows.get((provider, day))

    def record(self, totals):
        self.rows[(totals.provider, totals.day)] = totals


def test_a_day_redis_lost_starts_again_from_the_ledger(redis_client, key_prefix, clock):
    day = utc_day(NOON)
    ledger = FakeLedger({("twitter", day): DayTotals("twitter", day, 20 * MICRO, 0, 2, 2, 0, 2000)})
    book = SpendBook(redis_client, key_prefix, clock, ledger)
    refused = book.reserve("twitter", 10.0, 25.0)  # $20 of $25 already spent, says the ledger
    assert not refused.granted and refused.wait_s > 3600
    totals = book.totals("twitter")
    assert (totals.spent_micro, totals.calls, totals.resources) == (20 * MICRO, 2, 2000)


def test_flush_writes_the_day_to_the_ledger(redis_client, key_prefix, clock):
    ledger = FakeLedger({})
    book = SpendBook(redis_client, key_prefix, clock, ledger)
    book.settle(book.reserve("twitter", 10.0, None), "twitter", 1.25, resources=125)
    (written,) = book.flush(["twitter"])
    assert ledger.rows[("twitter", utc_day(NOON))] == written
    assert written.spent_usd == 1.25


# -- the budget is never passed --------------------------------------------------------------
steps = st.lists(
    st.tuples(
        st.integers(0, 3), st.integers(1, 1000), st.floats(0, 1)
    ),  # op, worst (cents), billed share
    min_size=1,
    max_size=80,
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=steps, budget_cents=st.integers(1, 3000))
def test_no_sequence_of_reservations_passes_the_budget(
    redis_client, key_prefix, plan, budget_cents
):
    clock = ManualClock(NOON)
    book = SpendBook(redis_client, f"{key_prefix}:{budget_cents}:{len(plan)}", clock)
    redis_client.delete(book.keys.spend_day("twitter", utc_day(NOON)))
    budget, open_ = budget_cents / 100, []
    for op, worst_cents, share in plan:
        if op and open_:  # settle one of the open calls, billed at most its worst case
            held = open_.pop(op % len(open_))
            book.settle(held, "twitter", held.worst_micro * share / MICRO)
        else:
            held = book.reserve("twitter", worst_cents / 100, budget)
            if held.granted:
                open_.append(held)
        day = book.totals("twitter")
        assert day.spent_micro + day.reserved_micro <= budget * MICRO + 1e-6
    for held in open_:
        book.settle(held, "twitter", held.worst_micro / MICRO)
    assert book.totals("twitter").spent_micro <= budget * MICRO + 1e-6


def test_workers_in_threads_never_pass_the_budget(redis_url, key_prefix):
    clock = ManualClock(NOON)
    budget = 50.0
    granted = []

    def worker(seed):
        rng = random.Random(seed)
        book = SpendBook(redis_connect(redis_url), key_prefix, clock)
        for _ in range(60):
            held = book.reserve("twitter", rng.choice([1.0, 2.5, 10.0]), budget)
            if held.granted:
                granted.append(held)
                book.settle(held, "twitter", held.worst_micro * rng.random() / MICRO)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    day = SpendBook(redis_connect(redis_url), key_prefix, clock).totals("twitter")
    assert day.reserved_micro == 0 and day.calls == len(granted)
    assert day.spent_micro <= budget * MICRO
    assert day.spent_usd > budget / 2  # the budget was actually contended for
