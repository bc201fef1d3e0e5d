"""A PostgreSQL connection closed under the workers does not fail a sync.

Between the workers and PostgreSQL sits what closes connections behind the
client's back (a pooler's or a NAT's idle timeout): here a relay
(``tests/integration/pg_relay.py``) that every process of the stack connects
through, and that closes its connections when the test says. Two ways a
worker meets a dead connection, both with a real worker process (the
Procfile's threads pool) and the sync checked exactly against the simulator:

- the pool's idle connections were cut: the pool checks a connection before
  handing it out, so no task gets a dead one;
- the connection is cut in the middle of the finalization's transaction: the
  error gives the message back to the broker (as a Redis outage does), the
  redelivered page finalizes, once.

And the web role: a read that loses its connection answers 503 with
``Retry-After``, not 500.
"""

from __future__ import annotations

import psycopg
import pytest
import redis

from devtools.devstack import DevStack, WorkerSpec
from state.store import SyncStore
from tests.integration.conftest import TEST_ENV, Stack, new_user
from tests.integration.conftest_http import BEARER
from tests.integration.pg_relay import PostgresRelay

REQUEUED = b"message requeued"


@pytest.fixture(scope="module")
def relayed(tmp_path_factory, session_database):
    relay = PostgresRelay(session_database)
    dev = DevStack(
        var_dir=tmp_path_factory.mktemp("pg-relay"),
        workers=[WorkerSpec("normal,whale,trickle", pool="threads", concurrency=2, name="pgw")],
        env={**TEST_ENV, "DATABASE_URL": relay.url},
        embedded_redis=True,
    )
    try:
        with dev:
            yield Stack(dev), relay
    finally:
        relay.close()


def sync_exactly(stack: Stack, size: int = 30) -> tuple[str, dict]:
    """Log a new user in with one GitHub account; (sync id, its record) once final,
    after checking its stored network is exactly the provider's."""
    user, account = new_user(), stack.add_account("github", size)
    sync_id = stack.login(user, account).json()["syncs"][0]["sync_id"]
    record = stack.wait_final(sync_id)
    assert record["status"] == "succeeded", record
    assert record["connections_fetched"] == size
    stored = stack.network_ids(user, "github")
    assert len(stored) == size and set(stored) == stack.truth("github", account["id"])
    return sync_id, record


def requeues(stack: Stack) -> int:
    return (stack.dev.var_dir / "pgw.log").read_bytes().count(REQUEUED)


def raw_record(stack: Stack, sync_id: str) -> dict:
    return SyncStore(redis.Redis.from_url(stack.dev.redis_url), "netsync").get_sync(sync_id)


def test_connections_cut_while_idle_are_not_handed_to_a_sync(relayed):
    stack, relay = relayed
    sync_exactly(stack)  # the worker's and the web's pools now hold connections
    before = requeues(stack)
    assert relay.cut_all() >= 1  # every one of them, as an idle timeout would
    sync_id, _ = sync_exactly(stack)
    # the pool replaced the dead connections before any task used one: nothing was
    # given back to the broker, and the stall sweep had nothing to recover
    assert requeues(stack) == before
    assert not raw_record(stack, sync_id).get("recoveries")


def test_a_connection_cut_in_the_finalization_gives_the_message_back(relayed, session_database):
    stack, relay = relayed
    before, fired = requeues(stack), relay.cut_on_marker
    relay.cut_on(b"CREATE TEMP TABLE staged")  # the finalization's transaction, under way
    sync_id, _ = sync_exactly(stack)
    assert relay.cut_on_marker == fired + 1
    # the page task's message came back at once (not through the stall sweep) and
    # its redelivery finalized the sync: one finalization, one feed entry
    assert requeues(stack) == before + 1
    assert not raw_record(stack, sync_id).get("recoveries")
    with psycopg.connect(session_database) as conn:
        kinds = conn.execute("SELECT kind FROM changes WHERE sync_id = %s", (sync_id,)).fetchall()
        finalized = conn.execute(
            "SELECT count(*) FROM finalized_syncs WHERE sync_id = %s", (sync_id,)
        ).fetchone()[0]
    assert kinds == [("synced",)] and finalized == 1


def test_a_database_outage_is_a_503_with_retry_after_not_a_500(http_client, svc, monkeypatch):
    def lost(*args, **kwargs):
        raise psycopg.OperationalError("consuming input failed: server closed the connection")

    monkeypatch.setattr(svc.networks, "network_page", lost)
    response = http_client.get("/v1/users/u-x/networks/github", headers=BEARER)
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert response.get_json()["error"]["code"] == "unavailable"
