"""A thousand login webhooks at once, against the web role as production runs it
(the Procfile's gunicorn line: two gevent worker processes, so the racing requests
really are in different processes and only Redis decides between them).

- One user's thousand logins (each its own delivery id): exactly one sync. No
  worker runs during the storm, so the sync stays in flight throughout and every
  one of the thousand races the same in-flight marker (none can be answered
  "fresh" by a sync that already finished); a worker started afterwards runs it.
- One delivery id sent a thousand times at once (a sender's retries), each time
  with another user's body: one of them is processed, every other answer is the
  first answer or "still being processed" (409), and nothing else starts.
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests

from devtools.devstack import DevStack, WorkerSpec, login_body, signed_login_headers
from service.config import DEV_ENCRYPTION_KEY
from state.credentials import CredentialStore
from state.keys import Keys
from state.metrics import counter_field
from state.store import SyncStore
from tests.integration.conftest import TEST_ENV, Stack, new_user

REQUESTS = 1_000
#: client threads: enough to keep both gunicorn workers busy with many requests in
#: flight at once, few enough for a 2-core machine
THREADS = 64
PREFIX = "netsync"


@pytest.fixture(scope="module")
def storm_stack(tmp_path_factory):
    dev = DevStack(
        var_dir=tmp_path_factory.mktemp("storm"),
        env=TEST_ENV,
        embedded_redis=True,
        web_server="gunicorn",
        workers=[],
    )
    with dev:
        yield Stack(dev)


def storm(send) -> list[requests.Response]:
    """``send(session, i)`` for i in range(REQUESTS) from THREADS threads, the first
    THREADS released together; one keep-alive session per thread."""
    local = threading.local()
    start = threading.Barrier(THREADS)

    def one(i: int) -> requests.Response:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        if i < THREADS:
            start.wait()
        return send(local.session, i)

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(one, range(REQUESTS)))


def post(session: requests.Session, web: str, body: bytes, delivery: str) -> requests.Response:
    return session.post(
        f"{web}/webhooks/login",
        data=body,
        timeout=120,
        headers=signed_login_headers(body, delivery=delivery),
    )


def sync_records(client: redis.Redis, users: set[str]) -> dict[str, list[str]]:
    """user -> ids of every sync record the store holds for them, found by scanning
    the record keys themselves (not an index that a race could have skipped)."""
    keys = Keys(PREFIX)
    owner = {keys.user("github", user).sync("").record: user for user in users}
    found: dict[str, list[str]] = {}
    for raw in client.scan_iter(match=keys.user("github", "*").sync("*").record, count=1000):
        head, _, sync_id = raw.decode().rpartition(":sync:")
        if ":" not in sync_id and f"{head}:sync:" in owner:  # the record, not :pending etc.
            found.setdefault(owner[f"{head}:sync:"], []).append(sync_id)
    return found


def webhook_triggers(client: redis.Redis) -> Counter:
    counters = client.hgetall(Keys(PREFIX).metrics)
    return Counter(
        {
            outcome: int(
                counters.get(
                    counter_field("triggers", {"kind": "webhook", "outcome": outcome}).encode(), 0
                )
            )
            for outcome in ("queued", "inflight", "fresh")
        }
    )


def test_a_thousand_concurrent_logins_for_one_user_start_exactly_one_sync(storm_stack):
    stack = storm_stack
    client = redis.Redis.from_url(stack.dev.redis_url)
    account = stack.add_account("github", 500)
    user = new_user()
    body = login_body(user, [account])
    before = webhook_triggers(client)

    answers = storm(lambda session, i: post(session, stack.web, body, delivery="new"))

    assert Counter(a.status_code for a in answers) == {202: REQUESTS}, Counter(
        a.status_code for a in answers
    )
    tickets = [ticket for a in answers for ticket in a.json()["syncs"]]
    assert len(tickets) == REQUESTS  # one relation: one ticket per answer
    sync_ids = {t["sync_id"] for t in tickets}
    assert len(sync_ids) == 1, sync_ids
    (sync_id,) = sync_ids
    assert Counter(t["status"] for t in tickets) == {"queued": REQUESTS}  # nothing ran it yet
    assert sync_records(client, {user}) == {user: [sync_id]}
    listed = [r for r in SyncStore(client, PREFIX).list_syncs(limit=10_000) if r["user_id"] == user]
    assert [r["sync_id"] for r in listed] == [sync_id]  # and the listing agrees
    # how each trigger ended (service.api.trigger_outcome): one started it, the rest found it
    triggers = webhook_triggers(client) - before
    assert triggers == {"queued": 1, "inflight": REQUESTS - 1}, triggers

    stack.dev.start_worker(
        WorkerSpec("normal,whale,trickle", pool="threads", concurrency=4, name="w")
    )
    stack.dev.wait_workers_ready()
    final = stack.wait_final(sync_id)
    assert final["status"] == "succeeded", final
    ids = stack.network_ids(user, "github")
    assert len(ids) == len(set(ids)) == 500
    assert set(ids) == stack.truth("github", account["id"])
    # the provider saw one sync: one profile call for the account
    calls = requests.get(
        f"{stack.sim}/_sim/calls", params={"account": account["id"]}, timeout=30
    ).json()["calls"]
    assert Counter(c["kind"] for c in calls)["profile"] == 1, Counter(c["kind"] for c in calls)


def test_a_delivery_replayed_a_thousand_times_is_processed_once(storm_stack):
    stack = storm_stack
    client = redis.Redis.from_url(stack.dev.redis_url)
    account = stack.add_account("github", 50)
    delivery = "storm-" + secrets.token_hex(8)
    users = [new_user() for _ in range(REQUESTS)]  # each try carries another user's body
    bodies = [login_body(user, [account]) for user in users]

    answers = storm(lambda session, i: post(session, stack.web, bodies[i], delivery))

    owners = [i for i, a in enumerate(answers) if "X-Netsync-Replayed" not in a.headers]
    assert len(owners) == 1, [answers[i].status_code for i in owners[:10]]
    (owner,) = owners
    first = answers[owner]
    assert first.status_code == 202, first.text
    kinds = Counter()
    for i, answer in enumerate(answers):
        if i == owner:
            continue
        if answer.status_code == 409:  # the first was still being processed
            assert answer.json()["error"]["code"] == "delivery_in_progress", answer.text
            kinds["in_progress"] += 1
        else:
            assert (answer.status_code, answer.json()) == (202, first.json())
            kinds["first_answer"] += 1
    print(f"replays of one delivery: {dict(kinds)}")
    # only the owner's body was processed: one sync, one credential
    (started,) = first.json()["syncs"]
    assert sync_records(client, set(users)) == {users[owner]: [started["sync_id"]]}
    credentials = CredentialStore(client, PREFIX, (DEV_ENCRYPTION_KEY,))
    assert [u for u in users if credentials.exists("github", u)] == [users[owner]]

    # once answered, a replay always gets that answer and still starts nothing
    latecomer = new_user()
    later = post(requests, stack.web, login_body(latecomer, [account]), delivery)
    assert later.status_code == 202 and later.json() == first.json()
    assert later.headers["X-Netsync-Replayed"] == "true"
    assert sync_records(client, {*users, latecomer}) == {users[owner]: [started["sync_id"]]}
    assert not credentials.exists("github", latecomer)
