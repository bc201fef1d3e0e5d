"""The integration stack: real Redis, the simulator over HTTP, the web app,
Celery worker processes and the scheduler, started once per session.

Every test uses its own user ids and simulator accounts, so tests share the
stack without sharing state.
"""
from __future__ import annotations

import secrets
import time

import pytest
import requests

from service.config import DEV_API_TOKEN
from devtools.devstack import DevStack, WorkerSpec, send_login

TEST_ENV = {
    # quick retries so failure paths finish within a test's patience
    "BACKOFF_BASE_SECONDS": "0.2",
    "BACKOFF_CAP_SECONDS": "1",
    "MAX_BACKOFF_ATTEMPTS": "3",
    # a failing provider is given up on after 2 s (production: 5 minutes)
    "RETRY_BUDGET_SECONDS": "2",
    "BREAKER_COOLDOWN_SECONDS": "0.5",
    "BREAKER_MAX_COOLDOWN_SECONDS": "1",
    "HTTP_READ_TIMEOUT": "5",
    "TASK_SOFT_TIME_LIMIT": "20",
    "BROKER_VISIBILITY_TIMEOUT": "60",
    "NETSYNC_ENV": "test",
    # OAuth clients for the token-refresh paths (the simulator accepts any)
    "TWITTER_OAUTH_CLIENT": "netsync-test-client:netsync-test-secret",
    "LINKEDIN_OAUTH_CLIENT": "netsync-test-client:netsync-test-secret",
}


class Stack:
    """Test-side handle on a running DevStack: signed webhooks, API calls, simulator control."""

    def __init__(self, dev: DevStack):
        self.dev = dev
        self.web = dev.web_url
        self.sim = dev.simulator_url
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {DEV_API_TOKEN}"

    # -- simulator -----------------------------------------------------------------
    def add_account(self, provider: str, size: int, start: int = 0, **extra) -> dict:
        default_id = f"acct-{secrets.token_hex(4)}"
        if provider == "bluesky":  # an actor is a handle (a domain name) or a DID
            default_id += ".bsky.social"
        account = {"provider": provider, "id": extra.pop("id", default_id),
                   "size": size, "start": start, "token": extra.pop("token", f"tok-{secrets.token_hex(6)}"),
                   **extra}
        response = requests.post(f"{self.sim}/_sim/accounts", json={"accounts": [account]}, timeout=10)
        response.raise_for_status()
        return account

    def truth(self, provider: str, account_id: str) -> set[str]:
        response = requests.get(f"{self.sim}/_sim/truth/{provider}/{account_id}", timeout=60)
        response.raise_for_status()
        return set(response.json()["ids"])

    def add_faults(self, *faults) -> None:
        response = requests.post(f"{self.sim}/_sim/faults", json={"add": list(faults)}, timeout=10)
        response.raise_for_status()

    def stats(self) -> dict:
        return requests.get(f"{self.sim}/_sim/stats", timeout=10).json()

    # -- triggers ------------------------------------------------------------------
    def login(self, user_id: str, *accounts: dict, delivery: str | None = None) -> requests.Response:
        return send_login(self.web, user_id, list(accounts), delivery)

    def resync(self, user_id: str, provider: str, force: bool = True) -> dict:
        response = self.http.post(f"{self.web}/v1/syncs", timeout=30,
                                  json={"user_id": user_id, "provider": provider, "force": force})
        assert response.status_code == 202, response.text
        return response.json()

    def sync(self, sync_id: str) -> dict:
        return self.http.get(f"{self.web}/v1/syncs/{sync_id}", timeout=10).json()

    def wait_final(self, sync_id: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.sync(sync_id)
            if record["status"] not in ("queued", "running"):
                return record
            time.sleep(0.1)
        raise AssertionError(f"sync {sync_id} not final after {timeout}s: {record}")

    def network_ids(self, user_id: str, provider: str) -> list[str]:
        ids, cursor = [], None
        while True:
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            response = self.http.get(f"{self.web}/v1/users/{user_id}/networks/{provider}",
                                     params=params, timeout=30)
            if response.status_code == 404:
                return []
            body = response.json()
            ids += [c["id"] for c in body["connections"]]
            cursor = body.get("next_cursor")
            if not cursor:
                return ids

    def changes(self, user_id: str, provider: str) -> dict:
        return self.http.get(f"{self.web}/v1/users/{user_id}/networks/{provider}/changes",
                             timeout=30).json()


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    dev = DevStack(
        var_dir=tmp_path_factory.mktemp("stack"),
        workers=[WorkerSpec("normal,whale,trickle", pool="prefork", concurrency=4, name="main")],
        env=TEST_ENV,
        redis_db=15,
    )
    with dev:
        yield Stack(dev)


def new_user() -> str:
    return f"u-{secrets.token_hex(5)}"


# the operations stack (callbacks, control, live status, dashboard): tests/integration/ops_fixtures.py
from tests.integration.ops_fixtures import (  # noqa: E402,F401
    callback_receiver, ops_stack, sentry_receiver)
