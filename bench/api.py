"""Small client helpers the benchmarks share: simulator control, triggers, waiting."""

from __future__ import annotations

import time
from datetime import datetime

import requests

from devtools.devstack import network_ids as devstack_network_ids
from devtools.devstack import send_login
from service.config import DEV_API_TOKEN

_api = requests.Session()
_api.headers["Authorization"] = f"Bearer {DEV_API_TOKEN}"


def add_account(stack, account: dict) -> None:
    requests.post(
        f"{stack.simulator_url}/_sim/accounts", json={"accounts": [account]}, timeout=10
    ).raise_for_status()


def login(stack, user_id: str, account: dict) -> str:
    """One sync: the provider's first relation (the benchmarks measure one direction)."""
    import providers

    relation = providers.provider_classes()[account["provider"]].RELATIONS[0]
    response = send_login(stack.web_url, user_id, [{"relations": [relation], **account}], http=_api)
    response.raise_for_status()
    return response.json()["syncs"][0]["sync_id"]


def sync(stack, sync_id: str) -> dict:
    return _api.get(f"{stack.web_url}/v1/syncs/{sync_id}", timeout=10).json()


def wait_final(stack, sync_id: str, timeout: float = 300, poll: float = 0.05) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = sync(stack, sync_id)
        if record["status"] not in ("queued", "running"):
            return record
        time.sleep(poll)
    raise TimeoutError(f"sync {sync_id} not final after {timeout}s")


def network_ids(stack, user_id: str, provider: str) -> list[str]:
    """The stored network (PostgreSQL), read as the main app does: GET /v1/.../networks."""
    return devstack_network_ids(stack.web_url, _api, user_id, provider)


def seconds(start_iso: str, end_iso: str) -> float:
    return (datetime.fromisoformat(end_iso) - datetime.fromisoformat(start_iso)).total_seconds()


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def add_account_many(stack, accounts: list[dict]) -> None:
    requests.post(
        f"{stack.simulator_url}/_sim/accounts", json={"accounts": accounts}, timeout=60
    ).raise_for_status()
