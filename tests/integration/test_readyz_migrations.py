"""``/readyz`` says not ready while the database's schema is behind the code's migrations.

A web process that starts before ``db upgrade`` ran (or against a database
restored from an older dump) would answer 500 on every read of a table it
expects; the load balancer should not send it traffic. Ready again as soon
as the database is migrated, without a restart (each probe looks again).
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from state import migrate
from tests.integration.conftest_http import make_app


@pytest.fixture
def fresh_database(session_database):
    """An empty database of this test's own on the session's server (dropped after)."""
    name = "netsync_unmigrated_" + secrets.token_hex(4)
    with psycopg.connect(session_database, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield urlunsplit(urlsplit(session_database)._replace(path="/" + name))
    with psycopg.connect(session_database, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_app(redis_url, key_prefix, http_broker_url, fresh_database):
    app = make_app(redis_url, key_prefix, http_broker_url, database_url=fresh_database)
    yield app
    app.extensions["netsync"].networks.close()


def readiness(app):
    response = app.test_client().get("/readyz")
    return response.status_code, response.get_json()


def test_an_unmigrated_database_is_not_ready_until_migrated(fresh_app, fresh_database):
    status, body = readiness(fresh_app)
    assert status == 503 and body["error"]["code"] == "unavailable"
    assert body["checks"]["redis"] == "ok" and body["checks"]["broker"] == "ok"
    assert body["checks"]["database"].startswith("not migrated")
    assert "flask --app service db upgrade" in body["error"]["message"]
    migrate.upgrade(fresh_database)
    status, body = readiness(fresh_app)
    assert status == 200 and body["checks"]["database"] == "ok"


def test_a_schema_behind_the_code_is_not_ready(fresh_app, fresh_database, monkeypatch):
    migrate.upgrade(fresh_database)  # at this code's head, 0001
    # code one migration ahead of the database (a release whose upgrade did not run)
    heads, known = migrate._scripts()
    monkeypatch.setattr(migrate, "_scripts", lambda: (frozenset({"0002"}), known | {"0002"}))
    status, body = readiness(fresh_app)
    assert status == 503
    assert body["checks"]["database"].startswith(f"schema behind: at {min(heads)}")
    assert "needs 0002" in body["error"]["message"]


def test_a_schema_ahead_of_the_code_stays_ready(fresh_app, fresh_database):
    """A newer release migrated first (as a deploy does): the older processes serve on."""
    migrate.upgrade(fresh_database)
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'f00d_a_newer_release'")
    status, body = readiness(fresh_app)
    assert status == 200 and body["checks"]["database"] == "ok"
