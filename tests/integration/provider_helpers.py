"""Helpers for the provider integration tests, on top of ``conftest.Stack``.

Besides the signed login with every credential field, these read what the
simulator saw (``/_sim/calls``) and what the service parked (the delayed
set in Redis), and can *expedite* a parked task: a provider wait of an hour
(Facebook's rolling window, LinkedIn's midnight UTC) is checked as parked
with the right due time and no calls meanwhile, then made due now, which
stands in for the hour passing.
"""

from __future__ import annotations

import json
import time

import requests

from devtools.devstack import send_login
from tests.integration.conftest import new_user

# The refresh rows need the app's OAuth client credentials in the workers.
# The stack's processes inherit this process's environment and start after
# collection has imported this module, so setting them here reaches them.
# (Better: move these two lines into conftest.TEST_ENV.)

PREFIX = "netsync"  # NETSYNC_KEY_PREFIX of the test stack (the default)


def client(stack):
    """A client for the stack's Redis (the cluster client on a cluster)."""
    return stack.dev.redis_client()


def login(stack, user_id: str, account: dict, **fields) -> dict:
    """Signed login webhook for one account, with any credential field; returns its sync."""
    response = send_login(stack.web, user_id, [{**account, **fields}])
    assert response.status_code == 202, response.text
    (sync,) = response.json()["syncs"]
    return sync


def sync_new_account(stack, provider: str, size: int, timeout: float = 90, **extra):
    """A fresh simulator account and user, synced once: (user, account, final record)."""
    forget_quota(stack, provider)
    credential = {k: extra.pop(k) for k in ("expires_at", "token_secret") if k in extra}
    account = stack.add_account(provider, size, **extra)
    user = new_user()
    sync = login(stack, user, account, **credential)
    return user, account, stack.wait_final(sync["sync_id"], timeout=timeout)


def calls(stack, provider: str, **filters) -> list[dict]:
    params = {"provider": provider, **{k: v for k, v in filters.items() if v is not None}}
    response = requests.get(f"{stack.sim}/_sim/calls", params=params, timeout=10)
    response.raise_for_status()
    return response.json()["calls"]


def last_seq(stack) -> int:
    response = requests.get(
        f"{stack.sim}/_sim/calls", params={"limit": 1, "since_seq": 10**12}, timeout=10
    )
    return response.json()["next_seq"] - 1


def parked(stack, sync_id: str) -> list[dict]:
    """This sync's entries in the delayed set, each with its ``due_at``."""
    r = client(stack)
    out = []
    for entry_id, payload in r.hgetall(f"{PREFIX}:{{delayed}}:entries").items():
        task = json.loads(payload)
        if task["args"] and task["args"][0] == sync_id:
            out.append(
                {
                    **task,
                    "id": entry_id.decode(),
                    "score": r.zscore(f"{PREFIX}:{{delayed}}:due", entry_id),
                }
            )
    return out


def wait_parked(stack, sync_id: str, timeout: float = 20) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = parked(stack, sync_id)
        if entries:
            return entries
        time.sleep(0.05)
    raise AssertionError(f"sync {sync_id} parked nothing within {timeout}s: {stack.sync(sync_id)}")


def expedite(stack, sync_id: str, provider: str) -> int:
    """Make this sync's parked tasks due now (and forget the provider's learned quota)."""
    forget_quota(stack, provider)
    r = client(stack)
    entries = parked(stack, sync_id)
    for entry in entries:
        r.zadd(f"{PREFIX}:{{delayed}}:due", {entry["id"]: time.time()})
    return len(entries)


def wait_final_expediting(stack, sync_id: str, provider: str, timeout: float = 60) -> dict:
    """Wait for a final status, expediting whatever the sync parks meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = stack.sync(sync_id)
        if record["status"] not in ("queued", "running"):
            return record
        expedite(stack, sync_id, provider)
        time.sleep(0.2)
    raise AssertionError(f"sync {sync_id} not final after {timeout}s: {stack.sync(sync_id)}")


def forget_quota(stack, provider: str) -> None:
    """Drop the service's quota buckets for one provider.

    The adaptive app-wide budgets (Facebook, LinkedIn) learn from every
    rejection; without this, a test's injected throttles would slow the
    next tests down (by design) and make their run times depend on order.
    """
    r = client(stack)
    for key in r.scan_iter(match=f"{PREFIX}:quota:{{{provider}:*", count=1000):
        r.delete(key)


def token_calls(stack) -> dict:
    """Calls to each provider's OAuth token endpoint, from /_sim/stats."""
    return {p: kinds.get("token", 0) for p, kinds in stack.stats()["calls"]["by_kind"].items()}
