"""The spend ledger (state.spend.SpendLedger) against a real PostgreSQL and a real Redis."""

from __future__ import annotations

import datetime
import secrets
import threading

import pytest

from state.networks import NetworkStore
from state.spend import MICRO, DayTotals, SpendBook, SpendLedger, utc_day
from tests.conftest import ManualClock

#: a migrated database and Redis: also run on a Redis Cluster (make integration-cluster)
pytestmark = pytest.mark.cluster

NOON = datetime.datetime(2026, 5, 28, 12, tzinfo=datetime.UTC).timestamp()


@pytest.fixture(scope="module")
def ledger(database_url):
    store = NetworkStore(database_url, max_connections=10)
    yield SpendLedger(store.pool)
    store.close()


def provider() -> str:
    return "p" + secrets.token_hex(4)  # a row of this test's own


def test_a_row_only_grows_whatever_the_order_of_writes(ledger):
    name = provider()
    ledger.record(DayTotals(name, "2026-05-28", 5 * MICRO, 0, 5, 5, 0, 500))
    ledger.record(DayTotals(name, "2026-05-28", 3 * MICRO, 0, 7, 6, 1, 300))  # a late flush
    found = ledger.read(name, "2026-05-28")
    assert (found.spent_micro, found.calls, found.counted_calls, found.not_modified) == (
        5 * MICRO,
        7,
        6,
        1,
    )
    assert found.resources == 500
    assert ledger.read(name, "2026-05-29") is None


def test_concurrent_flushes_agree(ledger):
    name = provider()
    writes = [DayTotals(name, "2026-05-28", n * 10_000, 0, n, n, 0, n) for n in range(1, 41)]

    def flush(part):
        for totals in part:
            ledger.record(totals)

    threads = [threading.Thread(target=flush, args=(writes[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found = ledger.read(name, "2026-05-28")
    assert (found.calls, found.spent_micro) == (40, 400_000)


def test_the_book_writes_through_and_survives_a_lost_redis_day(ledger, redis_client, key_prefix):
    name, clock = provider(), ManualClock(NOON)
    book = SpendBook(redis_client, key_prefix, clock, ledger)
    for _ in range(2):
        held = book.reserve(name, 10.0, 25.0)
        ledger.record(book.settle(held, name, 10.0, resources=1000))  # write-through
    redis_client.delete(book.keys.spend_day(name, utc_day(NOON)))  # Redis lost the day
    refused = book.reserve(name, 10.0, 25.0)
    assert not refused.granted  # the ledger's $20 still count
    assert book.reserve(name, 5.0, 25.0).granted
    written = book.flush([name])
    assert written[0].spent_micro == 20 * MICRO and written[0].reserved_micro == 5 * MICRO
    assert ledger.read(name, utc_day(NOON)).calls == 2
