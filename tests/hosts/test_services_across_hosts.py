"""PostgreSQL, Redis and the scheduler across hosts: what each role does when what it
needs is out of reach, and when a scheduler's host is lost."""

from __future__ import annotations

import threading
import time

import psycopg
import requests

from devtools.devstack import login_body, signed_login_headers
from state.delayed import DelayedSet
from state.liveness import Liveness
from tests.hosts.helpers import (
    SIZE,
    assert_exact,
    host_stack,
    pages_of,
    record_figure,
    seed_previous_network,
    stored_record,
    wait_pages,
)
from tests.integration.conftest import Stack, new_user

OUTAGE_S = 60.0


def stored_network_sync(dev, user: str) -> str | None:
    """Which sync the network in PostgreSQL holds (read directly, not through a relay)."""
    with psycopg.connect(dev.direct_database_url) as conn:
        row = conn.execute(
            "SELECT sync_id FROM networks WHERE user_id = %s AND provider = 'github'", (user,)
        ).fetchone()
    return row[0] if row else None


def test_postgresql_unreachable_for_60_s_during_finalization(network, tmp_path):
    """Every host loses PostgreSQL (its relay stops forwarding, both ways, nothing
    refused) half-way through the pages, for 60 s: the pages complete in Redis, the
    finalization waits (the sync stays running, never failed, the stored network the
    previous one), and once PostgreSQL is back the sync finalizes once: exact, each
    feed entry once."""
    dev = host_stack(network, tmp_path)
    with dev:
        stack = Stack(dev)
        account = stack.add_account("github", SIZE)
        user = new_user()
        diff = seed_previous_network(dev, user, stack.truth("github", account["id"]))
        (sync,) = stack.login(user, account).json()["syncs"]
        wait_pages(stack, sync["sync_id"], pages_of(SIZE) // 2)
        dev.cut_relay("postgres")
        cut = time.monotonic()
        statuses, finalizing_at = set(), None
        while time.monotonic() - cut < OUTAGE_S:  # the outage itself: the fault
            record = stored_record(dev, sync["sync_id"])
            statuses.add(record["status"])
            if finalizing_at is None and record.get("finalizing"):
                finalizing_at = time.monotonic()
            assert stored_network_sync(dev, user) == f"s_seed_{user}"  # never half
            time.sleep(0.5)
        dev.heal_relay("postgres")
        healed = time.monotonic()
        record = assert_exact(stack, user, account, sync["sync_id"], diff)
        done = time.monotonic()
        assert statuses == {"running"}, statuses  # it waited: never failed, never final
        assert finalizing_at is not None  # every page was stored during the outage
        assert not record.get("recoveries"), record
        assert stored_network_sync(dev, user) == sync["sync_id"]
        # no worker was taken for lost: the one finalizing waited, beating all along
        assert Liveness(dev.redis_client(), "netsync").lost() == []
        record_figure(
            "postgres-outage-60s",
            seconds_outage_start_to_all_pages_stored=round(finalizing_at - cut, 1),
            seconds_heal_to_final=round(done - healed, 1),
        )


def test_the_web_host_cut_off_from_redis_answers_503_and_writes_nothing(network, tmp_path):
    """The web host's back link (Redis, PostgreSQL, the broker) is cut; the main app
    still reaches it on its front link. A login webhook is answered 503 with
    Retry-After, never 500, and nothing of it is written; the same delivery sent again
    after the heal starts its sync, once, and the sync is exact."""
    dev = host_stack(network, tmp_path, front_web=True)
    with dev:
        stack = Stack(dev)
        account = stack.add_account("github", 3_000)
        user = new_user()
        body = login_body(user, [account])
        headers = signed_login_headers(body, delivery="login-" + user)
        # the web app's connections to Redis are open (another login went through)
        warm = stack.add_account("github", 100)
        assert stack.login(new_user(), warm).status_code == 202
        network.cut("web")
        began = time.monotonic()
        answer = requests.post(
            f"{dev.web_url}/webhooks/login", data=body, headers=headers, timeout=120
        )
        answered = time.monotonic() - began
        assert answer.status_code == 503, (answer.status_code, answer.text)
        assert answer.headers.get("Retry-After"), answer.headers
        assert answer.json()["error"]["code"] == "unavailable"
        health = requests.get(f"{dev.web_url}/healthz", timeout=30)
        network.heal("web")
        redis = dev.redis_client()
        assert not list(redis.scan_iter(match=f"*{user}*")), "half-written"
        again = requests.post(
            f"{dev.web_url}/webhooks/login", data=body, headers=headers, timeout=120
        )
        assert again.status_code == 202, again.text
        (sync,) = again.json()["syncs"]
        assert_exact(stack, user, account, sync["sync_id"])
        replay = requests.post(
            f"{dev.web_url}/webhooks/login", data=body, headers=headers, timeout=60
        )
        assert replay.json() == again.json()  # the delivery id: one sync, not two
        record_figure(
            "web-cut-from-redis",
            status=answer.status_code,
            retry_after=answer.headers.get("Retry-After"),
            seconds_to_answer=round(answered, 1),
            healthz_while_cut=health.status_code,
        )


def test_the_scheduler_host_lost_the_other_takes_over(network, tmp_path):
    """Two schedulers on two hosts. Parked work is released by both (claims are
    atomic), the lost-worker sweep by the one holding the lease. The lease holder's
    host is cut for good: the other takes the lease over, parked work keeps being
    released (each entry once, none stranded), and a worker lost afterwards is still
    noticed: the sync is exact."""
    dev = host_stack(network, tmp_path, schedulers=("s1", "s2"))
    with dev:
        stack = Stack(dev)
        live = Liveness(dev.redis_client(), "netsync")
        dev.wait_until(lambda: live.lease_holder("lost-workers"), 30, "a sweeping scheduler")
        leader = live.lease_holder("lost-workers")
        leader_host = "s1" if "s1" in _scheduler_host(dev, leader) else "s2"
        # parked work due over the next 18 s: no-op page tasks (no such sync); when each
        # leaves the delayed set (sent) is watched from now on
        delayed = DelayedSet(dev.redis_client(), "netsync")
        parked_at = time.time()
        due = {
            delayed.park("github.page", [f"s_none_{i}", ""], {}, "normal", 2 + i * 0.5): parked_at
            + 2
            + i * 0.5
            for i in range(33)
        }
        # and a burst due at the cut: the schedulers are mid-batch (claimed, not yet
        # sent) when the leader's host goes
        due.update(
            {
                delayed.park("github.page", [f"s_burst_{i}", ""], {}, "normal", 4.0): parked_at
                + 4.0
                for i in range(150)
            }
        )
        released: dict = {}
        watching = threading.Event()
        watcher = threading.Thread(target=watch_releases, args=(delayed, due, released, watching))
        watcher.start()
        try:
            time.sleep(max(0.0, parked_at + 4.02 - time.time()))  # the burst is being sent
            network.cut(leader_host)
            cut = time.monotonic()
            dev.wait_until(
                lambda: live.lease_holder("lost-workers") not in (None, leader), 60, "a new leader"
            )
            took_over = time.monotonic() - cut
            # a sync, and a worker lost during it: the new leader must notice that too
            account = stack.add_account("github", SIZE)
            user = new_user()
            (sync,) = stack.login(user, account).json()["syncs"]
            wait_pages(stack, sync["sync_id"], pages_of(SIZE) * 3 // 4)
            network.cut("w1")
            record = assert_exact(stack, user, account, sync["sync_id"])
            assert int(record.get("handed_on") or 0) >= 1, record
            dev.wait_until(lambda: len(released) == len(due), 60, "every parked entry sent")
        finally:
            watching.set()
            watcher.join()
        record_figure(
            "scheduler-host-lost",
            seconds_to_new_leader=round(took_over, 1),
            parked_entries=len(due),
            worst_release_lateness_s=round(max(released.values()), 2),
            entries_late_over_1s=sum(late > 1.0 for late in released.values()),
        )
        dev.kill("w1")


def watch_releases(delayed, due: dict, released: dict, stop) -> None:
    """When each parked entry left the delayed set, as lateness past its due time."""
    while not stop.is_set() and len(released) < len(due):
        remaining = {entry.id for entry in delayed.entries()}
        now = time.time()
        for entry_id, due_at in due.items():
            if entry_id not in remaining and entry_id not in released:
                released[entry_id] = now - due_at
        time.sleep(0.05)


def _scheduler_host(dev, holder: str) -> str:
    """The host of the scheduler whose lease id is ``holder`` (its pid is in it)."""
    pid = int(holder.split(":")[1])
    for name, proc in dev.processes.items():
        if proc.pid == pid:
            return dev.host_of(name)
    raise AssertionError(f"no process with pid {pid}")
