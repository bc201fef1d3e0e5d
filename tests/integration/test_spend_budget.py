"""Spend is a quota: X's $0.010 per follower under a $5 daily budget, with real processes.

One stack (2 prefork workers × 2 processes, the scheduler, the simulator with
X's real limits and billing) with ``BUDGET_TWITTER=5/day`` and X's documented
price. A 1,200-follower account costs $12.01 to read (the profile lookup is
billed too), so it takes three UTC days: on each, what the simulator billed
(its ``usage``: resources × price) never passes $5; when the budget is spent
the sync waits, ``running`` with ``waiting_for: spend_budget`` until the next
day, and does not fail. The workers' spend clock is moved a day at a time
(``tests/integration/clock_app.py``: an offset in Redis), and the calls parked
for the budget are made due, as the scheduler would make them at midnight.
"""

from __future__ import annotations

import time

import pytest
import requests

from devtools.devstack import DevStack, WorkerSpec
from state.admission import SPEND_BUDGET
from state.delayed import DelayedSet
from state.spend import SpendBook, utc_day
from tests.conftest import own_database
from tests.integration.conftest import TEST_ENV, Stack, new_user, stack_options

BUDGET_USD, PRICE_USD = 5.0, 0.010
#: where the workers' spend clock (``clock_app``) reads its offset: seconds added to the time
OFFSET_KEY = "test:spend-clock-offset"
DAY_S = 86400.0
WORKERS = [
    WorkerSpec(
        "normal,whale,trickle",
        pool="prefork",
        concurrency=2,
        name=f"s{i}",
        app="tests.integration.clock_app",
    )
    for i in range(2)
]


@pytest.fixture(scope="module")
def spend_stack(tmp_path_factory):
    # a database of its own: the ledger seeds the day's spend, and every other stack of
    # the session bills X to the session's database on the same UTC day
    with own_database(tmp_path_factory) as database_url:
        yield from spend_stack_on(tmp_path_factory, database_url)


def spend_stack_on(tmp_path_factory, database_url: str):
    env = {
        "DATABASE_URL": database_url,
        **TEST_ENV,
        "BUDGET_TWITTER": f"{BUDGET_USD:g}/day",
        "PRICE_BLUESKY": "10",
        "BUDGET_BLUESKY": f"{BUDGET_USD:g}/day",
        "SWEEP_INTERVAL_SECONDS": "1",  # the scheduler copies the day to the ledger this often
    }
    dev = DevStack(
        var_dir=tmp_path_factory.mktemp("spend"),
        workers=WORKERS,
        redis_db=10,
        **stack_options(env),
    )
    dev.start()
    try:
        yield Stack(dev)
    finally:
        dev.stop()


def billed(stack: Stack) -> tuple[int, float]:
    """(resources, USD) the simulator billed X so far."""
    usage = stack.stats()["usage"].get("twitter", {})
    return usage.get("resources", 0), round(usage.get("resources", 0) * PRICE_USD, 6)


def wait_for_the_budget(stack: Stack, sync_id: str, timeout: float = 60) -> dict:
    """The sync's record once it is parked until the next day for its budget."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = stack.sync(sync_id)
        waiting = record.get("waiting") or {}
        assert record["status"] in ("queued", "running"), record  # it waits, it does not fail
        far = waiting.get("until") and waiting["until"] > iso_in(120)
        if record["waiting_for"] == SPEND_BUDGET and far:
            assert record["status"] == "running", record
            return record
        time.sleep(0.1)
    raise AssertionError(f"sync {sync_id} never waited for the next day: {record}")


def iso_in(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + seconds))


def next_day(stack: Stack, day: int) -> None:
    """The workers' UTC day ``day`` (0: today) begins: their spend clock moves on, and
    the calls parked for the budget fall due (the scheduler sends them)."""
    dev = stack.dev
    client = dev.redis_client()
    client.set(OFFSET_KEY, str(day * DAY_S))
    delayed = DelayedSet(client, dev.base_env.get("NETSYNC_KEY_PREFIX", "netsync"))
    parked = [e.id for e in delayed.entries() if e.reason == SPEND_BUDGET]
    assert parked, "nothing was parked for the budget"
    delayed.make_due(parked)


def day_spent(stack: Stack, day: int) -> float:
    dev = stack.dev
    book = SpendBook(dev.redis_client(), dev.base_env.get("NETSYNC_KEY_PREFIX", "netsync"))
    return book.totals("twitter", utc_day(time.time() + day * DAY_S)).spent_usd


def ledger_row(
    stack: Stack, day: str, expected: tuple[float, int, int], timeout: float = 30
) -> tuple[float, int, int] | None:
    """X's row of ``day`` in the PostgreSQL ledger, (usd, calls, resources), once the
    scheduler's periodic copy has caught up with ``expected`` (else the last row seen):
    a copy taken between the profile call and the page holds only the profile."""
    from state.networks import NetworkStore
    from state.spend import SpendLedger

    store = NetworkStore(stack.dev.database_url, 1)
    try:
        ledger, deadline, row = SpendLedger(store.pool), time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            found = ledger.read("twitter", day)
            if found is not None:
                row = (found.spent_usd, found.calls, found.resources)
                if row == expected:
                    break
            time.sleep(0.2)
    finally:
        store.close()
    return row


def test_billed_never_passes_the_budget_and_the_sync_waits_for_the_next_day(spend_stack):
    stack = spend_stack
    account = stack.add_account("twitter", 1_200)
    user = new_user()
    response = stack.login(user, account)
    assert response.status_code == 202, response.text
    sync_id = response.json()["syncs"][0]["sync_id"]

    # day 1: the profile ($0.01) and a page of the 499 followers the rest pays for
    record = wait_for_the_budget(stack, sync_id)
    assert billed(stack) == (500, 5.0)
    assert record["cost"]["resources"] == 500 and record["cost"]["usd"] == 5.0
    assert record["connections_fetched"] == 499
    assert day_spent(stack, 0) == 5.0
    durable = (5.0, 2, 500)
    assert ledger_row(stack, utc_day(time.time()), durable) == durable  # the durable copy

    # day 2: 500 more, and the wait again
    next_day(stack, 1)
    deadline = time.monotonic() + 60
    while stack.sync(sync_id)["connections_fetched"] < 999 and time.monotonic() < deadline:
        time.sleep(0.1)
    record = wait_for_the_budget(stack, sync_id)
    assert record["connections_fetched"] == 999
    assert billed(stack) == (1_000, 10.0)
    assert day_spent(stack, 1) == 5.0

    # day 3: the last 201, and the sync ends with the exact network
    next_day(stack, 2)
    record = stack.wait_final(sync_id, timeout=60)
    assert record["status"] == "succeeded", record
    ids = stack.network_ids(user, "twitter")
    assert len(ids) == len(set(ids)) == 1_200
    assert set(ids) == stack.truth("twitter", account["id"])
    assert billed(stack) == (1_201, 12.01)
    assert day_spent(stack, 2) == 2.01 and day_spent(stack, 2) <= BUDGET_USD
    cost = record["cost"]
    assert (cost["resources"], cost["usd"]) == (1_201, 12.01)
    assert cost["calls"] == cost["counted_calls"] == 4  # the profile and three pages
    assert record["waiting_for"] is None


def test_a_call_no_day_s_budget_pays_for_fails_the_sync_with_its_kind(spend_stack):
    """``Admission.never``: Bluesky priced here at $10 a resource under a $5 budget
    (``PRICE_BLUESKY``, ``BUDGET_BLUESKY``): not even its profile lookup can ever go."""
    stack = spend_stack
    account = stack.add_account("bluesky", 50)
    response = stack.login(new_user(), account)
    record = stack.wait_final(response.json()["syncs"][0]["sync_id"], timeout=60)
    assert record["status"] == "failed", record
    assert record["error"]["kind"] == "spend_budget_too_small", record
    assert record["cost"]["calls"] == 0
    assert stack.stats()["usage"].get("bluesky", {}).get("calls", 0) == 0  # nothing sent


def test_spend_shows_on_the_dashboard_and_in_metrics(spend_stack):
    from service.config import DEV_API_TOKEN
    from tests.integration.test_observability import scrape, total

    stack = spend_stack
    state = requests.get(
        f"{stack.web}/dashboard/state.json",
        headers={"Authorization": f"Bearer {DEV_API_TOKEN}"},
        timeout=10,
    ).json()
    (row,) = [s for s in state["spend"] if s["provider"] == "twitter"]
    assert row["budget_usd"] == BUDGET_USD and row["price"] == PRICE_USD
    assert 0 <= row["spent_usd"] <= BUDGET_USD
    samples = scrape(stack)
    assert total(samples, "netsync_spend_budget_usd", provider="twitter") == BUDGET_USD
    assert total(samples, "netsync_spend_usd_today", provider="twitter") == row["spent_usd"]
