"""The ``streams`` role with real processes: the simulator pushes each change on the
provider's channel, ``python -m sync.streams`` applies it, the feed shows it once.

Every wait here is for a state the mechanism guarantees (an entry in the feed,
the network equal to the provider's truth), bounded by a patience, never a
measured time. "Exactly once" is checked after a later marker change has come
through: a channel applies in order, so a duplicate of an earlier event would
have been applied before it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import threading
import time

import psycopg
import pytest
import redis
import requests
from aiohttp import web

from devtools.devstack import DevStack, WorkerSpec, stop_process
from service.config import DEV_WEBHOOK_SECRET
from state.spend import SpendBook
from sync.signatures import verify
from tests.integration.conftest import TEST_ENV, Stack, new_user, stack_options
from tests.integration.provider_helpers import calls
from tests.integration.receiver import CallbackReceiver
from tests.unit.test_egress import Listener

PATIENCE_S = 60.0
#: the Redis database of this module's stack (the others use 8 to 15)
STREAMS_DB = 7


@pytest.fixture(scope="module")
def receiver():
    with CallbackReceiver() as running:
        yield running


#: a Mastodon instance of the module's simulator that announces a private streaming URL
HOSTILE_INSTANCE = "hostile-streaming.example"


@pytest.fixture(scope="module")
def private_listener():
    """A loopback port no allow-list names: where the hostile instance says it streams."""
    running = Listener()
    yield running
    running.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, receiver, private_listener):
    env = {**TEST_ENV, "STREAMS_DEBOUNCE_SECONDS": "0.5", "CALLBACK_URL": receiver.url}
    hostile_url = f"wss://127.0.0.1:{private_listener.port}/streaming"
    dev = DevStack(
        var_dir=tmp_path_factory.mktemp("streams"),
        workers=[WorkerSpec("normal,whale,trickle", pool="threads", concurrency=4, name="main")],
        redis_db=STREAMS_DB,
        scenario={"accounts": [], "streaming_urls": {HOSTILE_INSTANCE: hostile_url}},
        **stack_options(env),
    )
    with dev:
        yield Stack(dev)


@pytest.fixture
def streams(stack):
    """Start ``streams`` processes on demand; all stopped after the test."""
    started = []

    def start(name: str = "streams", **env):
        proc = stack.dev.start_streams(f"{name}-{len(started)}", env=env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop_process(proc)


#: every provider token this module's accounts use (none may reach a log)
TOKENS: list[str] = []


def linked(stack, provider: str, size: int = 5, **extra):
    """A user with a synced network on ``provider``; (user id, account)."""
    user_id, account = new_user(), stack.add_account(provider, size, **extra)
    TOKENS.append(account["token"])
    response = stack.login(user_id, account)
    assert response.status_code == 202, response.text
    for sync in response.json()["syncs"]:
        assert stack.wait_final(sync["sync_id"])["status"] == "succeeded"
    return user_id, account


def sim_change(stack, provider, account_id, **body):
    response = requests.post(
        f"{stack.sim}/_sim/changes",
        json={"provider": provider, "account_id": account_id, **body},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


def feed(stack, user_id: str) -> list[dict]:
    entries, after = [], "0"
    while True:
        page = stack.http.get(
            f"{stack.web}/v1/changes", params={"after": after, "limit": 1000}, timeout=30
        ).json()
        entries += [e for e in page["changes"] if e["user_id"] == user_id]
        if not page["changes"]:
            return entries
        after = page["next_cursor"]


def stream_entries(stack, user_id: str) -> list[tuple[str, str]]:
    return [
        (e["kind"], e["connection"]["id"])
        for e in feed(stack, user_id)
        if e["source"] == "stream" and e["sync_id"] is None
    ]


def wait_for(condition, what: str, patience: float = PATIENCE_S):
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {patience}s: {what}")


def wait_entries(stack, user_id, expected: list[tuple[str, str]]):
    """Wait until the stream entries hold ``expected`` (as a multiset), then return them."""
    wanted = sorted(expected)
    try:
        return wait_for(lambda: sorted(stream_entries(stack, user_id)) == wanted or None, "")
    except AssertionError:
        have = sorted(stream_entries(stack, user_id))
        missing = [e for e in wanted if e not in have]
        extra = [e for e in have if e not in wanted]
        raise AssertionError(
            f"stream entries: {len(have)} of {len(wanted)}; missing {missing[:5]}…, "
            f"unexpected {extra[:5]}…"
        ) from None


def channels_open(stack, provider: str, count: int = 1):
    open_now = lambda: requests.get(f"{stack.sim}/_sim/push", timeout=10).json()["open"]  # noqa: E731
    wait_for(lambda: open_now().get(provider, 0) >= count, f"{count} {provider} stream(s) open")


def exactly_once(stack, user_id, provider, account_id, expected):
    """After a marker change has come through, the entries are exactly ``expected`` + it."""
    marker = sim_change(stack, provider, account_id, add=1)["added"]
    wait_for(lambda: ("added", marker[0]) in stream_entries(stack, user_id), "the marker change")
    entries = stream_entries(stack, user_id)
    assert sorted(entries) == sorted(expected + [("added", marker[0])])
    assert sorted(stack.network_ids(user_id, provider)) == sorted(stack.truth(provider, account_id))


def test_bluesky_follows_and_unfollows_reach_network_and_feed_once(stack, streams):
    user_id, account = linked(stack, "bluesky", relations=["followers", "following"])
    streams()
    channels_open(stack, "bluesky")
    added = sim_change(stack, "bluesky", account["id"], add=3)["added"]
    sim_change(stack, "bluesky", account["id"], remove=added[:1])
    # the user's own follows: records in the user's repository
    follows = sim_change(stack, "bluesky", account["id"], relation="following", add=2)["added"]
    sim_change(stack, "bluesky", account["id"], relation="following", remove=follows[:1])
    expected = [("added", a) for a in added + follows]
    expected += [("removed", added[0]), ("removed", follows[0])]
    wait_entries(stack, user_id, expected)
    following = stack.http.get(
        f"{stack.web}/v1/users/{user_id}/networks/bluesky/following", timeout=10
    ).json()
    assert {c["id"] for c in following["connections"]} == set(
        stack.truth_list("bluesky", account["id"], "following")
    )
    exactly_once(stack, user_id, "bluesky", account["id"], expected)


def test_mastodon_follows_reach_the_network_once_and_a_gap_is_filled(stack, streams):
    user_id, account = linked(stack, "mastodon")
    first = streams()
    channels_open(stack, "mastodon")
    added = sim_change(stack, "mastodon", account["id"], add=2)["added"]
    wait_entries(stack, user_id, [("added", a) for a in added])
    # stopped: the notifications of the meantime come from the REST list on restart
    first.send_signal(signal.SIGKILL)
    first.wait()
    missed = sim_change(stack, "mastodon", account["id"], add=2)["added"]
    streams()
    expected = [("added", a) for a in added + missed]
    wait_entries(stack, user_id, expected)
    exactly_once(stack, user_id, "mastodon", account["id"], expected)


def linked_on_instance(stack, instance: str):
    """A user whose Mastodon account lives on ``instance`` (its login names it)."""
    user_id = new_user()
    account = stack.add_account(
        "mastodon", 5, id=str(10**9 + secrets.randbelow(10**9)), instance=instance
    )
    TOKENS.append(account["token"])
    response = stack.login(user_id, {**account, "instance_url": f"{stack.sim}/mastodon/{instance}"})
    assert response.status_code == 202, response.text
    for sync in response.json()["syncs"]:
        assert stack.wait_final(sync["sync_id"])["status"] == "succeeded"
    return user_id, account


def push_requests(stack, account_id: str) -> set[tuple[str, str]]:
    """(instance, endpoint) of every push request that carried this account's token."""
    seen = requests.get(f"{stack.sim}/_sim/push", timeout=10).json()["mastodon_requests"]
    return {(r["instance"], r["endpoint"]) for r in seen if r["account_id"] == account_id}


def test_a_mastodon_account_streams_from_its_own_instance_only(stack, streams):
    instance = f"i{secrets.token_hex(3)}.example"
    user_id, account = linked_on_instance(stack, instance)
    streams()
    # the gap fill follows the stream's opening: once it is asked, the stream listens
    wait_for(
        lambda: (instance, "notifications") in push_requests(stack, account["id"]),
        "the account's stream opened on its instance",
    )
    added = sim_change(stack, "mastodon", account["id"], instance=instance, add=2)["added"]
    expected = [("added", a) for a in added]
    wait_entries(stack, user_id, expected)
    exactly_once(stack, user_id, "mastodon", account["id"], expected)
    # the token went to its own instance only: never to MASTODON_API_URL's
    assert {where for where, _ in push_requests(stack, account["id"])} == {instance}
    made = calls(stack, "mastodon", token=account["token"])
    assert made and all(c["path"].startswith(f"/mastodon/{instance}/") for c in made)


def test_an_account_that_moved_instance_streams_once_from_the_new_one(stack, streams):
    """Two linked rows (the old instance's id, the new one's), one credential: one stream,
    on the instance the credential names; nothing applied twice."""
    old, new = f"i{secrets.token_hex(3)}.example", f"i{secrets.token_hex(3)}.example"
    user_id, _ = linked_on_instance(stack, old)
    moved = stack.add_account("mastodon", 5, id=str(10**9 + secrets.randbelow(10**9)), instance=new)
    TOKENS.append(moved["token"])
    response = stack.login(user_id, {**moved, "instance_url": f"{stack.sim}/mastodon/{new}"})
    assert response.status_code == 202, response.text
    # full: the network is the new account's now (an incremental sync would add to the old)
    record = stack.wait_final(stack.resync(user_id, "mastodon", mode="full")["sync_id"])
    assert record["status"] == "succeeded"
    streams()
    wait_for(
        lambda: (new, "notifications") in push_requests(stack, moved["id"]),
        "the moved account's stream opened on its new instance",
    )
    added = sim_change(stack, "mastodon", moved["id"], instance=new, add=2)["added"]
    expected = [("added", a) for a in added]
    wait_entries(stack, user_id, expected)
    exactly_once(stack, user_id, "mastodon", moved["id"], expected)
    assert {where for where, _ in push_requests(stack, moved["id"])} == {new}
    # the old row's stream did not open a second one with the same token
    metrics = stack.http.get(f"{stack.web}/metrics", timeout=10).text
    assert (
        'netsync_stream_disconnects_total{provider="mastodon",reason="instance_moved"}' in metrics
    )


def test_a_private_streaming_url_is_refused_counted_and_never_called(
    stack, streams, private_listener
):
    user_id, account = linked_on_instance(stack, HOSTILE_INSTANCE)
    streams()
    metric = 'netsync_stream_urls_refused_total{at="streaming_url",provider="mastodon"}'
    wait_for(
        lambda: metric in stack.http.get(f"{stack.web}/metrics", timeout=10).text,
        "the refusal counted",
    )
    assert private_listener.accepted == 0
    # the instance was asked what it announces; its token went nowhere
    assert push_requests(stack, account["id"]) == set()
    seen = requests.get(f"{stack.sim}/_sim/push", timeout=10).json()["mastodon_requests"]
    assert any(r["instance"] == HOSTILE_INSTANCE and r["endpoint"] == "instance" for r in seen)


def test_x_subscriptions_and_events_reach_network_and_feed_once(stack, streams):
    # X ids are numbers (the Activity API's payloads carry them so)
    user_id, account = linked(stack, "twitter", id=str(10**17 + secrets.randbelow(10**17)))
    subscribed = x_subscriptions(stack)
    streams()
    wait_for(
        lambda: x_subscriptions(stack) >= subscribed + 2,
        "X subscriptions made for the linked account",
    )
    channels_open(stack, "twitter")
    added = sim_change(stack, "twitter", account["id"], add=2)["added"]
    sim_change(stack, "twitter", account["id"], remove=added[:1])
    expected = [("added", a) for a in added] + [("removed", added[0])]
    wait_entries(stack, user_id, expected)
    exactly_once(stack, user_id, "twitter", account["id"], expected)


def test_x_events_count_against_the_budget_and_a_spent_one_closes_the_stream(stack, streams):
    user_id, account = linked(stack, "twitter", id=str(10**17 + secrets.randbelow(10**17)))
    book = SpendBook(redis.Redis.from_url(stack.dev.redis_url), "netsync")
    # five events and a half (a resumed stream may deliver, and bill, one or two again)
    budget = book.totals("twitter").spent_usd + 0.055
    subscribed = x_subscriptions(stack)
    streams(BUDGET_TWITTER=f"{budget:.3f}/day")
    # X delivers events only for subscriptions that exist when they happen
    wait_for(lambda: x_subscriptions(stack) >= subscribed + 2, "subscriptions for the account")
    channels_open(stack, "twitter")
    delivered = []
    for _ in range(10):
        if needs_full(stack, user_id, "twitter"):
            break  # the budget is spent: what happens now is not delivered
        delivered += sim_change(stack, "twitter", account["id"], add=1)["added"]
        last = delivered[-1]
        wait_for(
            lambda last=last: (
                ("added", last) in stream_entries(stack, user_id)
                or needs_full(stack, user_id, "twitter")
            ),
            "the event applied, or the budget spent",
        )
    assert needs_full(stack, user_id, "twitter"), "ten events did not spend $0.055"
    assert delivered and ("added", delivered[0]) in stream_entries(stack, user_id)
    open_now = lambda: requests.get(f"{stack.sim}/_sim/push", timeout=10).json()["open"]  # noqa: E731
    wait_for(lambda: open_now().get("twitter", 0) == 0, "the X stream closed")
    # billed up to the event that crossed the budget, and no further (the stream is closed)
    assert budget <= book.totals("twitter").spent_usd < budget + 0.01 + 1e-6


def test_sigkill_mid_burst_loses_and_doubles_nothing(stack, streams):
    user_id, account = linked(stack, "bluesky")
    proc = streams()
    channels_open(stack, "bluesky")
    added = []
    for round_number in range(20):
        added += sim_change(stack, "bluesky", account["id"], add=10)["added"]
        if round_number == 8:
            os.kill(proc.pid, signal.SIGKILL)  # mid-burst, whatever it was doing
            proc.wait()
    streams()  # takes the channel over when the dead one's lease lapses, from its cursor
    expected = [("added", a) for a in added]
    wait_entries(stack, user_id, expected)
    exactly_once(stack, user_id, "bluesky", account["id"], expected)


def test_a_jetstream_disconnect_resumes_from_its_cursor(stack, streams):
    user_id, account = linked(stack, "bluesky")
    streams()
    channels_open(stack, "bluesky")
    added = []
    for _ in range(5):
        stack.add_faults({"kind": "stream_disconnect", "provider": "bluesky"})
        added += sim_change(stack, "bluesky", account["id"], add=3)["added"]
    expected = [("added", a) for a in added]
    wait_entries(stack, user_id, expected)
    exactly_once(stack, user_id, "bluesky", account["id"], expected)


def test_a_gap_beyond_replay_marks_the_networks_for_a_full_sync(stack, streams):
    user_id, account = linked(stack, "bluesky")
    proc = streams()
    channels_open(stack, "bluesky")
    added = sim_change(stack, "bluesky", account["id"], add=1)["added"]
    wait_entries(stack, user_id, [("added", added[0])])
    stop_process(proc)
    sim_change(stack, "bluesky", account["id"], add=1)
    stack.add_faults({"kind": "stream_disconnect", "provider": "bluesky", "forget": True})
    time.sleep(3)  # longer than the next process takes the channel to replay (below)
    assert not needs_full(stack, user_id, "bluesky")
    streams(JETSTREAM_REPLAY_SECONDS="2")
    wait_for(lambda: needs_full(stack, user_id, "bluesky"), "the network marked needs_full")
    # the next sync (auto) reads it in full, which finds what the stream lost, and clears it
    record = stack.wait_final(stack.resync(user_id, "bluesky")["sync_id"])
    assert (record["status"], record["mode"]) == ("succeeded", "full")
    assert not needs_full(stack, user_id, "bluesky")
    assert sorted(stack.network_ids(user_id, "bluesky")) == sorted(
        stack.truth("bluesky", account["id"])
    )


def test_two_streams_processes_apply_each_event_once(stack, streams):
    bluesky_user, bluesky = linked(stack, "bluesky")
    mastodon_users = [linked(stack, "mastodon") for _ in range(4)]
    streams()
    streams()
    channels_open(stack, "mastodon", 4)
    channels_open(stack, "bluesky")
    expected = {bluesky_user: []}
    for user_id, account in mastodon_users:
        added = sim_change(stack, "mastodon", account["id"], add=3)["added"]
        expected[user_id] = [("added", a) for a in added]
    for _ in range(3):
        added = sim_change(stack, "bluesky", bluesky["id"], add=5)["added"]
        expected[bluesky_user] += [("added", a) for a in added]
    for user_id, entries in expected.items():
        wait_entries(stack, user_id, entries)
    exactly_once(stack, bluesky_user, "bluesky", bluesky["id"], expected[bluesky_user])
    for user_id, account in mastodon_users:
        exactly_once(stack, user_id, "mastodon", account["id"], expected[user_id])


def test_a_burst_of_pushed_changes_is_one_signed_network_changed_callback_per_user(
    stack, streams, receiver
):
    user_id, account = linked(stack, "bluesky", relations=["followers", "following"])
    streams()
    channels_open(stack, "bluesky")
    added = sim_change(stack, "bluesky", account["id"], add=4)["added"]
    sim_change(stack, "bluesky", account["id"], remove=added[:1])
    follows = sim_change(stack, "bluesky", account["id"], relation="following", add=2)["added"]
    expected = [("added", a) for a in added + follows] + [("removed", added[0])]
    wait_entries(stack, user_id, expected)

    def changed():
        return [r for r in receiver.for_user(user_id) if r.json["event"] == "network.changed"]

    def totals():
        sums: dict[tuple[str, str], list[int]] = {}
        for call in changed():
            for network in call.json["networks"]:
                entry = sums.setdefault((network["provider"], network["relation"]), [0, 0])
                entry[0] += network["added"]
                entry[1] += network["removed"]
        return sums

    wanted = {("bluesky", "followers"): [4, 1], ("bluesky", "following"): [2, 0]}
    wait_for(lambda: totals() == wanted, "network.changed callbacks")
    calls = changed()
    assert {(r.json["user_id"], r.json["source"]) for r in calls} == {(user_id, "stream")}
    for call in calls:  # one user per callback, each network listed once, never empty
        listed = [(n["provider"], n["relation"]) for n in call.json["networks"]]
        assert listed and len(listed) == len(set(listed))
        assert all(n["added"] or n["removed"] for n in call.json["networks"])
    for call in calls:  # signed as every callback is
        assert verify(call.headers["X-Netsync-Signature"], call.body, [DEV_WEBHOOK_SECRET])
        assert call.headers["webhook-signature"].startswith("v1,")


class RogueJetstream:
    """A Jetstream that speaks nonsense: every connection gets malformed frames, then stays."""

    def __init__(self):
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def handle(self, request):
        self.connections += 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for i in range(50):
            await ws.send_str("{not json" if i % 2 else '{"did": "did:plc:x", "kind": "commit"}')
        async for _ in ws:
            pass
        return ws

    def __enter__(self):
        self.thread.start()
        app = web.Application()
        app.router.add_get("/subscribe", self.handle)
        self.runner = web.AppRunner(app)
        asyncio.run_coroutine_threadsafe(self.runner.setup(), self.loop).result()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        asyncio.run_coroutine_threadsafe(site.start(), self.loop).result()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/subscribe"
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_a_misbehaving_stream_is_cut_counted_and_reconnected_never_a_crash(stack, streams):
    linked(stack, "bluesky")
    with RogueJetstream() as rogue:
        proc = streams(BLUESKY_JETSTREAM_URL=rogue.url, STREAMS="bluesky")
        wait_for(lambda: rogue.connections >= 2, "a cut, then a reconnect")
        assert proc.poll() is None  # still running
    metrics = stack.http.get(f"{stack.web}/metrics", timeout=10).text
    assert 'netsync_stream_disconnects_total{provider="bluesky",reason="malformed"}' in metrics


def x_subscriptions(stack) -> int:
    return requests.get(f"{stack.sim}/_sim/push", timeout=10).json()["x_subscriptions"]


def needs_full(stack, user_id: str, provider: str) -> bool:
    with psycopg.connect(stack.dev.database_url) as conn:
        rows = conn.execute(
            "SELECT needs_full FROM networks WHERE user_id = %s AND provider = %s",
            (user_id, provider),
        ).fetchall()
    return bool(rows) and all(row[0] for row in rows)


def test_no_token_in_the_streams_logs(stack):
    """Last in this module: the streams processes' logs hold no provider token."""
    logs = list(stack.dev.var_dir.glob("streams-*.log"))
    assert logs and TOKENS
    text = "\n".join(path.read_text(errors="replace") for path in logs)
    assert [token for token in TOKENS if token in text] == []
    assert "simulator-activity-token" not in text
