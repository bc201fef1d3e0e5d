"""CallGate (state.admission): spend, concurrency and announced limits before a call, one step after."""

from __future__ import annotations

import datetime
import threading
import time

import pytest
from requests.structures import CaseInsensitiveDict

from providers.github import GitHub
from providers.twitter import Twitter
from state.admission import CONCURRENCY, QUOTA, SPEND_BUDGET, CallCost, CallGate
from state.announced import Caller
from state.batch import Batch
from state.concurrency import ConcurrencyCap
from state.spend_settings import SpendSettings
from tests.conftest import ManualClock, redis_connect

#: state against a real Redis: also run on a Redis Cluster (make integration-cluster)
pytestmark = pytest.mark.cluster

NOON = datetime.datetime(2026, 5, 28, 12, tzinfo=datetime.UTC).timestamp()
GH, X = GitHub("https://api.github.com"), Twitter("https://api.twitter.com")
ME = Caller("octocat", "ab" * 8, "api.github.com")
FIRST = X.page_call("42", "token:")


def gh_headers(limit, remaining, reset, **more):
    return CaseInsensitiveDict(
        {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(remaining),
            "x-ratelimit-reset": str(int(reset)),
            "x-ratelimit-resource": "core",
            **more,
        }
    )


def x_headers(remaining, reset):
    return {
        "x-rate-limit-limit": "300",
        "x-rate-limit-remaining": str(remaining),
        "x-rate-limit-reset": str(int(reset)),
    }


@pytest.fixture
def clock():
    return ManualClock(NOON)


def make_gate(redis_client, key_prefix, clock, **env) -> CallGate:
    return CallGate(redis_client, key_prefix, SpendSettings.from_env(env), clock=clock)


# -- the concurrency cap ----------------------------------------------------------------------
def test_leases_up_to_the_cap_then_a_short_wait(redis_client, key_prefix, clock):
    cap = ConcurrencyCap(redis_client, key_prefix, clock, ttl_s=15.0)
    held = [cap.acquire("github", "acct", 3) for _ in range(3)]
    assert all(lease.granted for lease in held)
    refused = cap.acquire("github", "acct", 3)
    assert not refused.granted and refused.wait_s == pytest.approx(0.25)
    cap.release(held[0])
    assert cap.acquire("github", "acct", 3).granted
    assert cap.acquire("github", "other", 3).granted  # per key


def test_a_lease_its_worker_never_released_expires(redis_client, key_prefix, clock):
    cap = ConcurrencyCap(redis_client, key_prefix, clock, ttl_s=15.0)
    assert cap.acquire("github", "acct", 1).granted  # its worker dies mid-call
    assert not cap.acquire("github", "acct", 1).granted
    clock.now += 15.01
    assert cap.acquire("github", "acct", 1).granted
    assert cap.held("github", "acct") == 1


def test_threads_never_hold_more_than_the_cap(redis_url, key_prefix, clock):
    seen, granted = [], []

    def worker():
        cap = ConcurrencyCap(redis_connect(redis_url), key_prefix, clock)
        for _ in range(30):
            lease = cap.acquire("github", "acct", 4)
            if lease.granted:
                granted.append(lease)
                seen.append(cap.held("github", "acct"))  # while this one is held
                time.sleep(0.001)
                cap.release(lease)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert granted and max(seen) <= 4
    assert ConcurrencyCap(redis_connect(redis_url), key_prefix, clock).held("github", "acct") == 0


# -- before: granted, or the wait and its reason; nothing held on a refusal -----------------------
def test_github_takes_a_lease_and_its_announced_rule(redis_client, key_prefix, clock):
    gate = make_gate(redis_client, key_prefix, clock)
    first = gate.before(GH, GH.profile_call("octocat"), ME, kind="profile")
    assert first.granted and first.lease is not None and first.grant.probe
    assert first.reservation is None  # free
    second = gate.before(GH, GH.profile_call("octocat"), ME, kind="profile")
    assert (second.granted, second.reason) == (False, QUOTA)
    assert gate.leases.held("github", "api.github.com|octocat") == 1  # per provider account


def test_the_budget_parks_a_call_before_it_touches_any_quota(redis_client, key_prefix, clock):
    gate = make_gate(redis_client, key_prefix, clock, BUDGET_TWITTER="5/day")
    refused = gate.before(X, FIRST, ME)  # a page: 1,000 × $0.010 = $10 at worst
    assert (refused.reason, refused.never) == (SPEND_BUDGET, True)
    bound = gate.announced.bind(X, FIRST, ME)
    assert gate.announced.state(bound) == {"300-900-all": {}}  # no quota taken
    profile = gate.before(X, X.profile_call("42"), ME, kind="profile")  # $0.01 fits
    assert profile.granted and profile.reservation.worst_micro == 10_000


def test_a_refusal_by_concurrency_gives_the_reservation_back(redis_client, key_prefix, clock):
    class Capped(Twitter):
        CONCURRENCY_CAP = 1

    capped = Capped("https://api.twitter.com")
    gate = make_gate(redis_client, key_prefix, clock, BUDGET_TWITTER="100/day")
    held = gate.before(capped, FIRST, ME)
    refused = gate.before(capped, FIRST, ME)
    assert held.granted and refused.reason == CONCURRENCY
    assert gate.day("twitter").reserved_micro == 10 * 1_000_000  # only the first's


def test_a_refusal_by_quota_gives_lease_and_reservation_back(redis_client, key_prefix, clock):
    gate = make_gate(redis_client, key_prefix, clock, BUDGET_TWITTER="100/day")
    probe = gate.before(X, FIRST, ME)
    refused = gate.before(X, FIRST, ME)  # the probe is out
    assert refused.reason == QUOTA
    assert gate.day("twitter").reserved_micro == 10 * 1_000_000
    gate.abandon(probe)
    assert gate.day("twitter").reserved_micro == 0 and gate.day("twitter").calls == 0


# -- after: account, correct, release, settle ----------------------------------------------
def test_after_returns_the_call_s_cost_and_settles_the_spend(redis_client, key_prefix, clock):
    gate = make_gate(redis_client, key_prefix, clock, BUDGET_TWITTER="100/day")
    granted = gate.before(X, FIRST, ME)
    outcome = gate.after(granted, x_headers(299, NOON + 900), resources=1000)
    assert outcome.cost == CallCost(1, 1, 0, 1000, 10 * 1_000_000)
    assert outcome.applied == ["300-900-all"]
    assert outcome.day.spent_usd == 10.0 and outcome.day.reserved_micro == 0
    assert outcome.cost.as_increments()["cost_usd_micro"] == 10_000_000
    assert (outcome.cost + outcome.cost).resources == 2000


def test_a_call_without_an_answer_is_billed_at_its_worst_case(redis_client, key_prefix, clock):
    gate = make_gate(redis_client, key_prefix, clock, BUDGET_TWITTER="100/day")
    timed_out = gate.before(X, FIRST, ME)
    outcome = gate.after(timed_out, answered=False)  # the provider may have sent 1,000
    assert outcome.cost.usd == 10.0 and outcome.day.spent_usd == 10.0


def test_a_free_304_costs_no_quota(redis_client, key_prefix, clock):
    gate = make_gate(redis_client, key_prefix, clock)
    probe = gate.before(GH, GH.profile_call("octocat"), ME)
    gate.after(probe, gh_headers(10, 9, NOON + 5))
    grants = [gate.before(GH, GH.profile_call("octocat"), ME) for _ in range(10)]
    assert [g.granted for g in grants].count(True) == 9
    outcome = gate.after(grants[0], gh_headers(10, 1, NOON + 5), not_modified=True)
    assert (outcome.cost.counted_calls, outcome.cost.not_modified) == (0, 1)
    assert gate.before(GH, GH.profile_call("octocat"), ME).granted  # its place came back


def test_unreadable_headers_are_reported_and_retry_after_honoured(redis_client, key_prefix, clock):
    gate = make_gate(redis_client, key_prefix, clock)
    probe = gate.before(GH, GH.profile_call("octocat"), ME)
    headers = gh_headers(10, 9, NOON + 5, **{"retry-after": "30"})
    headers["x-ratelimit-remaining"] = "nine"
    outcome = gate.after(probe, headers)
    assert outcome.report.malformed == ("x-ratelimit-remaining",) and outcome.applied == []
    refused = gate.before(GH, GH.profile_call("octocat"), ME)
    assert refused.reason == QUOTA and refused.wait_s == pytest.approx(30.0)


def test_after_can_ride_in_the_task_s_batch(redis_client, key_prefix, clock):
    gate = make_gate(redis_client, key_prefix, clock)
    probe = gate.before(GH, GH.profile_call("octocat"), ME)
    batch = Batch(redis_client)
    outcome = gate.after(probe, gh_headers(10, 9, NOON + 5), batch=batch)
    batch.execute()
    assert outcome.applied.value == ["5000-3600-all"] and outcome.day.value.calls == 1
    assert sum(gate.before(GH, GH.profile_call("octocat"), ME).granted for _ in range(10)) == 9


def test_workers_in_threads_never_pass_the_budget_through_the_gate(redis_url, key_prefix, clock):
    first = make_gate(redis_connect(redis_url), key_prefix, clock, BUDGET_TWITTER="95/day")
    probe = first.before(X, FIRST, ME)
    first.after(probe, x_headers(299, NOON + 900), resources=1000)  # $10
    results = []

    def worker():
        gate = make_gate(redis_connect(redis_url), key_prefix, clock, BUDGET_TWITTER="95/day")
        for _ in range(10):
            granted = gate.before(X, FIRST, ME)
            if granted.granted:
                results.append(gate.after(granted, x_headers(200, NOON + 900), resources=1000))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    day = first.day("twitter")
    assert len(results) == 8 and day.spent_usd == 90.0  # $95 allows 9 calls of $10 in all
    assert day.reserved_micro == 0
