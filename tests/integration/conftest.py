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

from devtools.devstack import DevStack, WorkerSpec, network_ids, send_login
from service.config import DEV_API_TOKEN
from simulator.providers import sample_account_id
from tests.conftest import CLUSTER

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


def stack_options(env: dict) -> dict:
    """DevStack options for a test stack with ``env``: in the cluster run
    (``NETSYNC_TEST_CLUSTER=1``) a Redis Cluster of its own, RabbitMQ as the
    broker and queues of its own (``<random>.normal`` …, deleted when it stops)."""
    if not CLUSTER:
        return {"env": env}
    from tests.integration.brokers import AMQP_URL

    return {
        "env": {**env, "CELERY_BROKER_URL": AMQP_URL},
        "redis_cluster": True,
        "queue_region": "t" + secrets.token_hex(4),
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
    def add_account(
        self, provider: str, size: int, start: int = 0, relations: list | None = None, **extra
    ) -> dict:
        """A simulator account; its login syncs ``relations`` (default: only the
        provider's first, so a test of one sync runs one sync)."""
        default_id = sample_account_id(provider, f"acct-{secrets.token_hex(4)}")
        account = {
            "provider": provider,
            "id": extra.pop("id", default_id),
            "size": size,
            "start": start,
            "token": extra.pop("token", f"tok-{secrets.token_hex(6)}"),
            **extra,
        }
        response = requests.post(
            f"{self.sim}/_sim/accounts", json={"accounts": [account]}, timeout=10
        )
        response.raise_for_status()
        return {**account, "relations": relations or [first_relation(provider)]}

    def truth(self, provider: str, account_id: str) -> set[str]:
        return set(self.truth_list(provider, account_id))

    def truth_list(self, provider: str, account_id: str, relation: str | None = None) -> list:
        params = {"relation": relation} if relation else {}
        response = requests.get(
            f"{self.sim}/_sim/truth/{provider}/{account_id}", params=params, timeout=60
        )
        response.raise_for_status()
        return response.json()["ids"]

    def add_faults(self, *faults) -> None:
        response = requests.post(f"{self.sim}/_sim/faults", json={"add": list(faults)}, timeout=10)
        response.raise_for_status()

    def stats(self) -> dict:
        return requests.get(f"{self.sim}/_sim/stats", timeout=10).json()

    # -- triggers ------------------------------------------------------------------
    def login(
        self, user_id: str, *accounts: dict, delivery: str | None = None
    ) -> requests.Response:
        return send_login(self.web, user_id, list(accounts), delivery)

    def resync(
        self, user_id: str, provider: str, force: bool = True, mode: str | None = None
    ) -> dict:
        """``POST /v1/syncs``; ``mode`` None: the default (``auto``: incremental within
        FULL_SYNC_EVERY of a full sync, so a test that needs removals asks for ``full``)."""
        body = {"user_id": user_id, "provider": provider, "force": force}
        if mode is not None:
            body["mode"] = mode
        response = self.http.post(f"{self.web}/v1/syncs", timeout=30, json=body)
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
        return network_ids(self.web, self.http, user_id, provider)

    def changes(self, user_id: str, provider: str) -> dict:
        return self.http.get(
            f"{self.web}/v1/users/{user_id}/networks/{provider}/changes", timeout=30
        ).json()


@pytest.fixture(scope="session", autouse=True)
def every_stack_uses_session_database(session_database):
    """Every stack of this session (web, workers, CLI runners) uses the session's database."""
    return session_database


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    dev = DevStack(
        var_dir=tmp_path_factory.mktemp("stack"),
        workers=[WorkerSpec("normal,whale,trickle", pool="prefork", concurrency=4, name="main")],
        redis_db=15,
        **stack_options(TEST_ENV),
    )
    with dev:
        yield Stack(dev)


def first_relation(provider: str) -> str:
    import providers

    return providers.provider_classes()[provider].RELATIONS[0]


def new_user() -> str:
    return f"u-{secrets.token_hex(5)}"
