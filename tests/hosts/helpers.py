"""What the hosts tests share: the stack they start, the checks they make, the figures they print.

Every check is a mechanism (the network equals the simulator's truth, no id
twice, each feed entry once, which recovery acted); durations are only printed,
as figures (``FIGURES``), never asserted.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import psycopg
import requests

from devtools.devstack import WorkerSpec
from providers.github import GitHub
from state.networks import NetworkStore
from state.store import SyncStore
from tests.hosts.stack import HostStack
from tests.integration.conftest import TEST_ENV, Stack

#: the stall sweep and the broker's own redelivery out of reach: what recovers a sync
#: here is the lost-worker sweep (or nothing)
HOSTS_ENV = {
    **TEST_ENV,
    "BROKER_VISIBILITY_TIMEOUT": "3600",
    "STALL_SECONDS": "3600",
    "SWEEP_INTERVAL_SECONDS": "5",
    # a partition is an outage of every provider call of the cut host: ride it out
    "RETRY_BUDGET_SECONDS": "120",
    "MAX_BACKOFF_ATTEMPTS": "5",
    "WORKER_BEAT_SECONDS": "1",
    "WORKER_LOST_SECONDS": "5",
    "SCHEDULER_LEASE_SECONDS": "5",
}
#: a page's call takes this long at the simulator, so a cut finds pages in flight
IN_FLIGHT = {"latency_ms": {"mean": 100}}
#: the issue's size: 300 GitHub pages
SIZE = 30_000
#: where figures go (one JSON object per line), read by the closing report
FIGURES = Path(__file__).resolve().parents[2] / "var" / "hosts-figures.jsonl"


def host_stack(
    network,
    tmp_path,
    *,
    broker: str = "redis",
    workers: tuple = ("w1", "w2"),
    schedulers: tuple = ("sched",),
    concurrency: int = 4,
    scenario: dict | None = None,
    env: dict | None = None,
    front_web: bool = False,
    web_host: str | None = "web",
    node_name: str | None = None,
) -> HostStack:
    """Web, scheduler(s) and one threads worker per worker host, each on a host of its own.

    ``node_name``: every worker gets this Celery node name (``whale@%h``, as a Procfile
    of one name per line would give), so the hosts' workers share it: namespaces share
    the machine's host name. Redis broker only (RabbitMQ refuses a second one)."""
    placement = {}
    for name in workers:
        network.add_host(name)
        placement[name] = name
    for name in schedulers:
        network.add_host(name)
    if web_host:
        network.add_host(web_host, front=front_web)
        placement["web"] = web_host
    dev = HostStack(
        var_dir=tmp_path,
        network=network,
        placement=placement,
        broker=broker,
        env={**HOSTS_ENV, **(env or {})},
        scenario=scenario or IN_FLIGHT,
        workers=[
            WorkerSpec(
                "normal,whale,trickle",
                pool="threads",
                concurrency=concurrency,
                name=name,
                wrap=same_node_name(node_name) if node_name else None,
            )
            for name in workers
        ],
        scheduler=False,
        scheduler_hosts=schedulers,
    )
    return dev


def same_node_name(node: str):
    """A WorkerSpec ``wrap`` that gives the worker the Celery node name ``node@%h``."""

    def wrap(cmd: list) -> list:
        at = cmd.index("-n")
        return cmd[: at + 1] + [f"{node}@%h"] + cmd[at + 2 :]

    return wrap


def wait_pages(stack: Stack, sync_id: str, pages: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        record = stack.sync(sync_id)
        if record["pages_fetched"] >= pages:
            return record
        assert record["status"] in ("queued", "running"), record
        assert time.monotonic() < deadline, f"sync {sync_id} did not reach {pages} pages"
        time.sleep(0.05)


def pages_of(size: int) -> int:
    return math.ceil(size / GitHub.PAGE_SIZE)


def seed_previous_network(dev: HostStack, user: str, truth: set, churn: int = 1000) -> tuple:
    """A network as a previous sync left it: ``churn`` of today's ids missing and
    ``churn`` others that have gone since. The sync under test then has a diff, and
    the feed one entry per id added or removed: (added, removed)."""
    kept = sorted(truth)
    added = set(kept[:churn])
    removed = {f"gone-{i}" for i in range(churn)}
    previous = [(c, c) for c in kept[churn:]] + [(c, c) for c in sorted(removed)]
    store = NetworkStore(dev.direct_database_url, max_connections=1)
    try:
        store.finalize(
            sync_id=f"s_seed_{user}",
            user_id=user,
            provider="github",
            relation="followers",
            status="succeeded",
            # verified two days ago, past FULL_SYNC_EVERY: the login's `auto` sync is the
            # full, verifying read whose removals the tests follow (not an incremental one)
            finished_at=time.time() - 2 * 86400,
            connections=previous,
        )
    finally:
        store.close()
    return added, removed


def assert_exact(stack: Stack, user: str, account: dict, sync_id: str, diff=None) -> dict:
    """Succeeded, the network is the truth id for id, none twice; the sync committed once,
    and its feed entries (``synced``, and with ``diff`` one per id added or removed) once.
    Returns the stored record."""
    record = stack.wait_final(sync_id, timeout=300)
    assert record["status"] == "succeeded", record
    ids = stack.network_ids(user, "github")
    assert len(ids) == len(set(ids)) == account["size"]
    assert set(ids) == stack.truth("github", account["id"])
    with psycopg.connect(stack.dev.direct_database_url) as conn:
        finalized = conn.execute(
            "SELECT count(*) FROM finalized_syncs WHERE sync_id = %s", (sync_id,)
        ).fetchone()[0]
        entries = conn.execute(
            "SELECT kind, connection_id, count(*) FROM changes WHERE sync_id = %s"
            " GROUP BY kind, connection_id",
            (sync_id,),
        ).fetchall()
    assert finalized == 1
    assert all(n == 1 for _, _, n in entries), [e for e in entries if e[2] > 1][:5]
    by_kind: dict = {}
    for kind, connection_id, _ in entries:
        by_kind.setdefault(kind, set()).add(connection_id)
    assert by_kind.pop("synced") == {None}
    if diff is not None:
        added, removed = diff
        assert by_kind == {"added": added, "removed": removed}
    return stored_record(stack.dev, sync_id)


def stored_record(dev: HostStack, sync_id: str) -> dict:
    """The sync record as Redis holds it (with ``handed_on``, ``recoveries``: which
    recovery acted), not as the API shows it."""
    return SyncStore(dev.redis_client(), "netsync").get_sync(sync_id)


def calls_for(stack: Stack, account: dict) -> list[dict]:
    response = requests.get(
        f"{stack.sim}/_sim/calls",
        params={"provider": "github", "account": account["id"]},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["calls"]


def extra_calls(stack: Stack, account: dict) -> int:
    """Provider calls beyond one profile call and one per page: what a fault cost."""
    return len(calls_for(stack, account)) - 1 - pages_of(account["size"])


def record_figure(case: str, **figures) -> None:
    """Print a figure and keep it (var/hosts-figures.jsonl) for the closing report."""
    line = {"case": case, **figures, "at": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(f"FIGURE {json.dumps(line)}")
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES.open("a") as out:
        out.write(json.dumps(line) + "\n")
