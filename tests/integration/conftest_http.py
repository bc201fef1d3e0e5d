"""Fixtures and helpers for the HTTP trigger tests (imported by test_http_triggers).

The app runs against the session's real Redis (``redis_url``, ``key_prefix``
from tests/conftest.py). No worker is needed: the app only enqueues. The
broker is database 14 of the same server so that no worker of another test
consumes (or is confused by) the messages these tests leave behind.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from dataclasses import replace

import pytest
import redis
from werkzeug.serving import make_server

from devtools.devstack import signed_login_headers
from service import create_app
from service.config import DEV_API_TOKEN, load_settings
from service.extensions import services
from simulator.providers import sample_account_id

BROKER_DB = 14
BEARER = {"Authorization": f"Bearer {DEV_API_TOKEN}"}


def broker_url_for(redis_url: str) -> str:
    return redis_url.rsplit("/", 1)[0] + f"/{BROKER_DB}"


@pytest.fixture(scope="session")
def http_broker_url(redis_url):
    """The broker database; the queues these tests filled are emptied afterwards."""
    url = broker_url_for(redis_url)
    yield url
    client = redis.Redis.from_url(url)
    for pattern in ("normal*", "whale*", "trickle*", "_kombu.binding*", "unacked*"):
        for key in client.scan_iter(match=pattern, count=1000):
            client.delete(key)


def make_app(redis_url: str, key_prefix: str, broker_url: str, **overrides):
    # the session's database (tests/integration/conftest.py: session_database)
    overrides.setdefault("database_url", os.environ.get("DATABASE_URL"))
    settings = replace(
        load_settings({}),
        redis_url=redis_url,
        broker_url=broker_url,
        key_prefix=key_prefix,
        **overrides,
    )
    return create_app({"TESTING": True}, settings=settings)


@pytest.fixture
def http_app(redis_url, key_prefix, http_broker_url):
    app = make_app(redis_url, key_prefix, http_broker_url)
    yield app
    app.extensions["netsync"].networks.close()


@pytest.fixture
def http_client(http_app):
    return http_app.test_client()


@pytest.fixture
def http_runner(http_app):
    return http_app.test_cli_runner()


@pytest.fixture
def svc(http_app):
    with http_app.app_context():
        yield services()


@pytest.fixture
def live_server(http_app):
    """The app behind werkzeug's real threaded HTTP server, on a free port."""
    server = make_server("127.0.0.1", 0, http_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


# -- helpers ---------------------------------------------------------------------------
def token() -> str:
    return f"tok-{secrets.token_hex(12)}"


def account(provider: str = "github", **fields) -> dict:
    """A login's account; one relation (the provider's first) unless ``relations`` says."""
    import providers

    return {
        "provider": provider,
        "account_id": sample_account_id(provider, f"acct-{secrets.token_hex(3)}"),
        "access_token": token(),
        "refresh_token": token(),
        "expires_at": 1_767_225_600,
        "token_secret": None,
        **(
            {"relations": [providers.provider_classes()[provider].RELATIONS[0]]}
            if provider in providers.provider_classes()
            else {}
        ),
        **fields,
    }


def login_body(user_id: str, *accounts: dict) -> bytes:
    return json.dumps({"user_id": user_id, "accounts": list(accounts) or [account()]}).encode()


signed_headers = signed_login_headers


def post_login(client, body: bytes, **header_options):
    return client.post("/webhooks/login", data=body, headers=signed_headers(body, **header_options))


def recent_sync_ids(svc) -> list[str]:
    """Every sync this test's app created (the store's recent index)."""
    return [raw.decode() for raw in svc.redis.zrange(f"{svc.settings.key_prefix}:recent", 0, -1)]


def finish_sync(svc, sync_id: str, connections: list[tuple[str, str]]) -> str:
    """Complete a sync the way page tasks do: one page, which finalizes it."""
    svc.store.mark_running(sync_id)
    svc.store.add_pending(sync_id, "profile", ["page-0"])
    outcome = svc.store.complete_page(sync_id, "page-0", connections)
    if outcome != "finalize":
        return outcome
    from sync.finalize import finalize_sync

    result, _ = finalize_sync(svc, svc.store.get_sync(sync_id))
    return result.status
