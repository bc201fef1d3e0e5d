"""Quotas with the real pipeline: several worker processes, the scheduler, the simulator.

Each class runs its own stack (embedded Redis, the simulator enforcing a rate
limit, the web app, 2 prefork workers × 2 processes, the scheduler) with the
quota configured for it, and judges behaviour from the simulator's own
records (its 429 count, its sliding peak per window, its call log), never
from how fast things went:

- published per-token limit: zero 429s, never more than the limit in any
  sliding window by the simulator's receiving time, with a CPU hog on every core;
- app-wide limit shared by a whale and 20 normal syncs: normal gets its share;
- unpublished limit (``"publish": false`` in the simulator, adaptive quota):
  after warm-up ≤ 5 % rejected and ≥ 80 % of the limit used;
- parked work survives a ``kill -9`` of the scheduler, and a provider wait
  longer than the broker's visibility timeout is fetched exactly once.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime

import pytest
import requests

from devtools.devstack import DevStack, WorkerSpec
from providers.ratelimits import RateLimitInfo
from simulator.testing import run_simulator
from state.credentials import Credential
from state.delayed import DelayedSet
from state.quota import RESET_SKEW_S, QuotaConfig, QuotaGate
from tests.integration.conftest import TEST_ENV, Stack, new_user, stack_options
from tests.quota_helpers import acquire, fingerprint

#: the core sync tests: also run on a Redis Cluster + RabbitMQ (make integration-cluster)
pytestmark = pytest.mark.cluster

WORKERS = [
    WorkerSpec("normal,whale,trickle", pool="prefork", concurrency=2, name=f"q{i}")
    for i in range(2)
]


def start_stack(
    tmp_path_factory, name: str, quota: str, rule: dict, redis_db: int, **env
) -> DevStack:
    dev = DevStack(
        var_dir=tmp_path_factory.mktemp(name),
        workers=WORKERS,
        redis_db=redis_db,
        scenario={"rate_limits": {"github": rule}},
        **stack_options({**TEST_ENV, "QUOTA_GITHUB": quota, "WHALE_THRESHOLD": "1000", **env}),
    )
    return dev.start()


def calls(stack: Stack, **params) -> list[dict]:
    """The simulator's call log for GitHub, oldest first."""
    response = requests.get(
        f"{stack.sim}/_sim/calls", params={"provider": "github", **params}, timeout=30
    )
    response.raise_for_status()
    return response.json()["calls"]


def key_stats(stack: Stack, key: str) -> dict:
    """The simulator's counters for one scope key (a token, or "app") of the GitHub rule."""
    (rule,) = [r for r in stack.stats()["rate_limits"] if r["provider"] == "github"]
    return rule["by_key"][key]


def start_sync(stack: Stack, account: dict, user: str | None = None) -> tuple[str, str]:
    user = user or new_user()
    response = stack.login(user, account)
    assert response.status_code == 202, response.text
    return user, response.json()["syncs"][0]["sync_id"]


def assert_full_network(stack: Stack, user: str, account: dict, record: dict) -> None:
    assert record["status"] == "succeeded", record
    ids = stack.network_ids(user, "github")
    assert len(ids) == len(set(ids)) == account["size"]
    assert set(ids) == stack.truth("github", account["id"])


def stack_epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def cpu_hogs():
    """A process spinning on every core for the length of the block (killed after it):
    the workers' time between taking quota and sending then varies as on a busy machine."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 1)
    ]
    try:
        yield hogs
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


def busiest_window(log: list[dict], window_s: float) -> int:
    """The most calls the simulator received in any span shorter than ``window_s``."""
    times = sorted(c["t"] for c in log)
    return max(
        (sum(1 for u in times[i:] if u < t + window_s) for i, t in enumerate(times)), default=0
    )


def learned_margin(stack: Stack, token: str) -> float | None:
    """The margin the token's GitHub bucket learned from its answers (seconds), if any."""
    client = stack.dev.redis_client()
    gate = QuotaGate(
        client,
        stack.dev.base_env.get("NETSYNC_KEY_PREFIX", "netsync"),
        QuotaConfig.from_env(stack.dev.base_env),
    )
    (bucket,) = gate.buckets("github", {"token": Credential("-", token).fingerprint()})
    value = client.hget(bucket.redis_key, "lat")
    return float(value) if value is not None else None


def provider_windows(log: list[dict], window_s: float) -> list[dict]:
    """The simulator's fixed windows rebuilt from its log: one opens at the first
    call after the previous one closed."""
    windows: list[dict] = []
    for call in log:
        if not windows or call["t"] >= windows[-1]["start"] + window_s:
            windows.append({"start": call["t"], "admitted": 0, "rejected": 0})
        windows[-1]["rejected" if call["rate_limited"] else "admitted"] += 1
    return windows


# --- a published per-token limit: 10 calls per 5 s ----------------------------------------

TOKEN_LIMIT, TOKEN_WINDOW_S = 10, 5.0
VISIBILITY_TIMEOUT_S = 3


@pytest.fixture(scope="class")
def token_stack(tmp_path_factory):
    dev = start_stack(
        tmp_path_factory,
        "quota-token",
        f"{TOKEN_LIMIT}/{TOKEN_WINDOW_S:g}/token",
        {"limit": TOKEN_LIMIT, "window_s": TOKEN_WINDOW_S, "scope": "token"},
        redis_db=12,
        BROKER_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT_S),
    )
    try:
        yield Stack(dev)
    finally:
        dev.stop()


class TestPublishedTokenLimit:
    def test_whale_on_several_workers_never_exceeds_the_limit(self, token_stack):
        """Four worker processes beside a CPU hog on every core: a call reaches the
        provider a varying while after its grant, and the provider counts it then."""
        stack = token_stack
        account = stack.add_account("github", 6_000)  # 60 pages: a whale above 1,000
        with cpu_hogs():
            user, sync_id = start_sync(stack, account)
            record = stack.wait_final(sync_id, timeout=300)
        assert record["queue"] == "whale"
        assert_full_network(stack, user, account, record)

        log = calls(stack, token=account["token"])
        assert len(log) >= 61  # the profile and 60 pages
        assert not [c for c in log if c["rate_limited"] or c["status"] != 200]
        seen = key_stats(stack, account["token"])
        busiest = busiest_window(log, TOKEN_WINDOW_S)
        margin = learned_margin(stack, account["token"])
        print(
            f"whale beside a CPU hog: {len(log)} calls over {log[-1]['t'] - log[0]['t']:.1f} s, "
            f"429s {seen['rejected']}, most received in any {TOKEN_WINDOW_S:g} s {busiest}/"
            f"{TOKEN_LIMIT} (simulator's meter {seen['peak']}); learned margin "
            f"{(margin or 0) * 1000:.0f} ms; first call "
            f"{log[0]['t'] - stack_epoch(record['created_at']):.2f} s after creation"
        )
        assert seen["rejected"] == 0
        # in any sliding 5 s, by the time the simulator received the calls
        assert busiest <= TOKEN_LIMIT
        assert seen["peak"] <= TOKEN_LIMIT
        assert margin is not None  # the answers were settled: the gate learned their latency

    def test_killed_scheduler_loses_no_parked_work(self, token_stack):
        stack = token_stack
        dev = stack.dev
        delayed = DelayedSet(dev.redis_client(), dev.base_env.get("NETSYNC_KEY_PREFIX", "netsync"))
        account = stack.add_account("github", 3_000)  # 30 pages: three windows' worth
        user, sync_id = start_sync(stack, account)
        wait_for(
            lambda: delayed.size() > 0 and stack.sync(sync_id)["pages_fetched"] > 0,
            30,
            "pages to be parked for quota",
        )

        scheduler = dev.processes["scheduler"]
        os.killpg(scheduler.pid, signal.SIGKILL)
        scheduler.wait()
        # a window and more without a scheduler: the parked pages fall due and wait
        time.sleep(TOKEN_WINDOW_S + 2)
        stalled = stack.sync(sync_id)
        assert stalled["status"] == "running", stalled
        assert delayed.size() > 0
        assert stalled["pages_fetched"] < 30

        dev.start_scheduler()
        record = stack.wait_final(sync_id, timeout=120)
        assert_full_network(stack, user, account, record)
        assert record["pages_fetched"] == 30
        log = calls(stack, token=account["token"])
        assert len(log) >= 31 and not [c for c in log if c["rate_limited"]]

    def test_wait_longer_than_visibility_timeout_fetches_once(self, token_stack):
        stack = token_stack
        account = stack.add_account("github", 100)  # the profile, then one page
        retry_after = 3 * VISIBILITY_TIMEOUT_S
        # GitHub's secondary limit on the page: "come back in 9 s", 3× the visibility timeout
        stack.add_faults(
            {
                "kind": "error",
                "provider": "github",
                "account": account["id"],
                "path_kind": "page",
                "name": "secondary_rate_limit",
                "retry_after": retry_after,
                "times": 1,
            }
        )
        user, sync_id = start_sync(stack, account)
        record = stack.wait_final(sync_id, timeout=60)
        assert_full_network(stack, user, account, record)

        # two more visibility timeouts: a message the broker held would come back by now
        time.sleep(2 * VISIBILITY_TIMEOUT_S + 1)
        pages = [c for c in calls(stack, token=account["token"]) if c["kind"] == "page"]
        assert [c["status"] for c in pages] == [403, 200]  # refused once, fetched exactly once
        assert pages[1]["t"] - pages[0]["t"] >= retry_after - 0.5  # and the wait was honoured


# --- an app-wide limit shared by a whale and 20 normal syncs --------------------------------

APP_LIMIT, APP_WINDOW_S = 20, 2.0
NORMAL_SHARE = 0.5  # the documented default (QUOTA_SHARES)


@pytest.fixture(scope="class")
def app_stack(tmp_path_factory):
    dev = start_stack(
        tmp_path_factory,
        "quota-app",
        f"{APP_LIMIT}/{APP_WINDOW_S:g}/app",
        {"limit": APP_LIMIT, "window_s": APP_WINDOW_S, "scope": "app"},
        redis_db=13,
    )
    try:
        yield Stack(dev)
    finally:
        dev.stop()


class TestSharedAppLimit:
    def test_normal_syncs_get_their_share_beside_a_whale(self, app_stack):
        stack = app_stack
        whale = stack.add_account("github", 15_000)  # 150 pages
        whale_user, whale_sync = start_sync(stack, whale)
        # the whale has the whole bucket to itself for a moment, then 20 people log in
        wait_for(lambda: stack.sync(whale_sync)["pages_fetched"] >= 10, 60, "the whale to run")
        normals = [stack.add_account("github", 250) for _ in range(20)]  # 4 calls each
        started = [start_sync(stack, account) for account in normals]
        for (user, sync_id), account in zip(started, normals):
            record = stack.wait_final(sync_id, timeout=120)
            assert record["queue"] == "normal"
            assert_full_network(stack, user, account, record)
        whale_record = stack.wait_final(whale_sync, timeout=120)
        assert_full_network(stack, whale_user, whale, whale_record)

        log = calls(stack)
        normal_tokens = {a["token"] for a in normals}
        normal_calls = [c for c in log if c["token"] in normal_tokens]
        assert len(normal_calls) >= 20 * 4
        # while both had work: from the first normal call to the last one
        first, last = normal_calls[0]["t"], normal_calls[-1]["t"]
        contended = [c for c in log if first <= c["t"] <= last]
        whale_calls = [c for c in contended if c["token"] == whale["token"]]
        assert len(whale_calls) + len(normal_calls) == len(contended)
        assert whale_calls, "the whale was not running while the normal syncs ran"
        # normal is guaranteed its share of the bucket: it may use more
        # (the whale is capped at its own share plus trickle's unused one),
        # never less, save for the last window, where normal runs out of work
        allowed = APP_LIMIT / APP_WINDOW_S * (last - first)
        print(
            f"contended {last - first:.1f} s: normal {len(normal_calls)} calls, whale "
            f"{len(whale_calls)}, the bucket allowed {allowed:.0f}; app 429s "
            f"{key_stats(stack, 'app')['rejected']}"
        )
        assert len(normal_calls) >= NORMAL_SHARE * allowed - APP_LIMIT * NORMAL_SHARE, (
            len(normal_calls),
            len(whale_calls),
            last - first,
        )
        assert len(normal_calls) >= len(whale_calls) - APP_LIMIT * NORMAL_SHARE
        assert key_stats(stack, "app")["rejected"] == 0


# --- an unpublished limit: the quota is adaptive and must learn it ---------------------------

HIDDEN_LIMIT, HIDDEN_WINDOW_S = 20, 2.0


@pytest.fixture(scope="class")
def hidden_stack(tmp_path_factory):
    # netsync knows only a ceiling, twice the real limit; the simulator
    # announces nothing and a rejection says only Retry-After
    dev = start_stack(
        tmp_path_factory,
        "quota-hidden",
        f"{2 * HIDDEN_LIMIT}/{HIDDEN_WINDOW_S:g}/token/adaptive",
        {"limit": HIDDEN_LIMIT, "window_s": HIDDEN_WINDOW_S, "scope": "token", "publish": False},
        redis_db=14,
    )
    try:
        yield Stack(dev)
    finally:
        dev.stop()


class TestUnpublishedLimit:
    def test_adaptive_quota_learns_the_hidden_limit(self, hidden_stack):
        stack = hidden_stack
        account = stack.add_account("github", 24_000)  # 240 pages
        user, sync_id = start_sync(stack, account)
        record = stack.wait_final(sync_id, timeout=200)
        assert_full_network(stack, user, account, record)
        assert (record.get("rate_limit") or {}).get("remaining") is None  # nothing announced

        windows = provider_windows(calls(stack, token=account["token"]), HIDDEN_WINDOW_S)
        first_rejection = next(i for i, w in enumerate(windows) if w["rejected"])
        # warm-up: the ramp, up to the window of the first rejection; the last
        # window is the sync's tail (not enough pages left to fill it)
        steady = windows[first_rejection + 1 :]
        assert len(steady) >= 4, windows
        measured, end = steady[:-1], steady[-1]["start"]
        admitted = sum(w["admitted"] for w in measured)
        rejected = sum(w["rejected"] for w in measured)
        assert rejected <= 0.05 * (admitted + rejected), measured
        # waits between windows count as unused quota
        seconds = end - measured[0]["start"]
        print(
            f"hidden limit {HIDDEN_LIMIT}/{HIDDEN_WINDOW_S:g} s: per window "
            f"{[(w['admitted'], w['rejected']) for w in windows]}; after warm-up {admitted} "
            f"admitted, {rejected} rejected over {seconds:.1f} s = "
            f"{admitted / (HIDDEN_LIMIT / HIDDEN_WINDOW_S * seconds):.1%} of the limit"
        )
        assert admitted >= 0.8 * HIDDEN_LIMIT / HIDDEN_WINDOW_S * seconds, (measured, seconds)


def test_simulator_hidden_limit_announces_nothing_but_retry_after():
    """The simulator's ``"publish": false`` (what the adaptive test above relies on)."""
    scenario = {
        "accounts": [{"provider": "github", "id": "hid", "size": 10, "token": "tok-hid"}],
        "rate_limits": {"github": {"limit": 2, "window_s": 30, "publish": False}},
    }
    with run_simulator(scenario) as sim:
        answers = [
            requests.get(
                sim.url("github", "/users/hid"),
                timeout=10,
                headers={"Authorization": "Bearer tok-hid"},
            )
            for _ in range(3)
        ]
        assert [a.status_code for a in answers] == [200, 200, 429]
        for answer in answers:
            assert not [h for h in answer.headers if h.lower().startswith("x-ratelimit")]
        assert 1 <= int(answers[2].headers["Retry-After"]) <= 30
        (rule,) = [r for r in sim.stats()["rate_limits"] if r["provider"] == "github"]
        assert rule["publish"] is False and rule["rejected"] == 1


# --- the gate alone, on a fake clock: what lets the whale above use every window -------------


class FakeClock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


class FirstCallWindows:
    """A provider like GitHub (and the simulator): a fixed window opens with the
    first call after the last one closed; headers say limit, remaining and the
    reset in whole seconds, rounded up."""

    def __init__(self, limit: int, window_s: float):
        self.limit, self.window_s, self.start, self.used = limit, window_s, None, 0

    def call(self, t: float) -> tuple[bool, RateLimitInfo]:
        if self.start is None or t >= self.start + self.window_s:
            self.start, self.used = t, 0
        admitted = self.used < self.limit
        self.used += admitted
        return admitted, RateLimitInfo(
            limit=self.limit,
            remaining=self.limit - self.used,
            reset_at=float(math.ceil(self.start + self.window_s)),
        )


@pytest.fixture
def quota_gate(redis_client):
    client = redis_client
    prefix = f"t-{uuid.uuid4().hex[:10]}"
    clock = FakeClock(1_000_000.3)
    config = QuotaConfig.from_env({"QUOTA_GITHUB": f"{TOKEN_LIMIT}/{TOKEN_WINDOW_S:g}/token"})
    gate = QuotaGate(client, prefix, config, clock=clock)
    yield gate, clock
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)


def test_a_window_our_call_opened_ends_on_our_clock(quota_gate):
    gate, clock = quota_gate
    scopes = {"token": fingerprint("tok-gate")}
    t0 = clock.now
    reset = float(math.ceil(t0 + TOKEN_WINDOW_S))  # 0.7 s after the window's true end
    for i in range(TOKEN_LIMIT):
        assert acquire(gate, "github", scopes, "whale") == 0.0
        clock.now += 0.01  # the answer is read 10 ms later
        left = TOKEN_LIMIT - 1 - i
        gate.observe(
            "github", scopes, RateLimitInfo(limit=TOKEN_LIMIT, remaining=left, reset_at=reset)
        )
    wait = acquire(gate, "github", scopes, "whale")
    # not before one window after the opening answer was read, and not at reset + skew either
    assert t0 + 0.01 + TOKEN_WINDOW_S <= clock.now + wait < reset + RESET_SKEW_S - 1
    clock.now += wait
    # a late answer from the window that ended does not close the new one
    gate.observe("github", scopes, RateLimitInfo(limit=TOKEN_LIMIT, remaining=0, reset_at=reset))
    assert acquire(gate, "github", scopes, "whale") == 0.0


def test_published_limit_every_window_used_never_more_in_any_window(quota_gate):
    gate, clock = quota_gate
    scopes = {"token": fingerprint("tok-stream")}
    provider = FirstCallWindows(TOKEN_LIMIT, TOKEN_WINDOW_S)
    start, grants = clock.now, []
    while clock.now < start + 30:
        wait = acquire(gate, "github", scopes, "whale")
        if wait:
            clock.now += wait + 0.002  # parked, then sent by the scheduler
            continue
        grants.append(clock.now)
        admitted, info = provider.call(clock.now + 0.003)  # on the wire for 3 ms
        assert admitted, f"429 at {clock.now - start:.3f} s"
        clock.now += 0.012
        gate.observe("github", scopes, info)
    busiest = max(
        sum(1 for u in grants[i:] if u < t + TOKEN_WINDOW_S) for i, t in enumerate(grants)
    )
    assert busiest <= TOKEN_LIMIT
    # six windows open in 30 s when each opens as the last one ends: all used
    assert len(grants) >= 6 * TOKEN_LIMIT
