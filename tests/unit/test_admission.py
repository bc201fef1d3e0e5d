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
    spend = gate.spend.reserve("twitter", 5.0, 5.0)  # another call holds the whole day
    gate.spend.settle(spend, "twitter", 5.0, resources=500)
    refused = gate.before(X, FIRST, ME)
    assert (refused.reason, refused.never) == (SPEND_BUDGET, False)
    assert refused.wait_s == pytest.approx(12 * 3600)  # until the next UTC day
    bound = gate.announced.bind(X, FIRST, ME)
    assert gate.announced.state(bound) == {"300-900-all": {}}  # no quota taken
    clock.now += 12 * 3600
    profile = gate.before(X, X.profile_call("42"), ME, kind="profile")  # a new day: $0.01 fits
    assert profile.granted and profile.reservation.worst_micro == 10_000
    assert profile.most_resources is None


def test_a_budget_below_a_page_buys_a_smaller_page(redis_client, key_prefix, clock):
    gate = make_gate(redis_client, key_prefix, clock, BUDGET_TWITTER="5/day")
    profile = gate.before(X, X.profile_call("42"), ME, kind="profile")
    gate.after(profile, x_headers(899, NOON + 900), resources=1)  # $0.01
    page = gate.before(X, FIRST, ME)  # 1,000 × $0.010 = $10 at worst: $4.99 is left
    assert page.granted and page.most_resources == 499
    assert X.sized(FIRST, page.most_resources).params["max_results"] == 499
    assert gate.day("twitter").reserved_micro == 4_990_000
    outcome = gate.after(page, x_headers(299, NOON + 900), resources=499)
    assert outcome.cost.usd == 4.99 and outcome.day.spent_usd == 5.0
    assert gate.before(X, FIRST, ME).reason == SPEND_BUDGET  # not a cent more today


def test_a_call_no_day_s_budget_can_pay_for_never_fits(redis_client, key_prefix, clock):
    tiny = make_gate(redis_client, key_prefix, clock, BUDGET_TWITTER="0.005/day")
    refused = tiny.before(X, X.profile_call("42"), ME, kind="profile")  # $0.01 for one user
    assert (refused.reason, refused.never) == (SPEND_BUDGET, True)
    # a provider whose page cannot ask for fewer items reserves its whole page
    priced = make_gate(
        redis_client, key_prefix + "p", clock, PRICE_GITHUB="0.01", BUDGET_GITHUB="0.50/day"
    )
    page = GH.page_call("octocat", GH.first_cursor("octocat"))
    assert priced.before(GH, page, ME).never  # 100 × $0.01 = $1 > $0.50


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
            if granted.granted:  # the last may be a smaller page: what the budget left pays for
                items = granted.most_resources or 1000
                results.append(gate.after(granted, x_headers(200, NOON + 900), resources=items))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    day = first.day("twitter")
    # $95 allows 9 calls of $10 in all, and then one of 500 items for the last $5
    assert len(results) == 9 and day.spent_usd == 95.0
    assert sorted(r.cost.resources for r in results)[0] == 500
    assert day.reserved_micro == 0


# -- the sync's cost, on its record ---------------------------------------------------------
def test_a_sync_s_cost_adds_up_on_its_record_and_reads_back_as_the_contract_says(
    redis_client, key_prefix
):
    from state.store import SyncStore

    store = SyncStore(redis_client, key_prefix)
    sync_id = store.begin_sync(
        user_id="u",
        provider="twitter",
        relation="followers",
        account_id="42",
        queue="normal",
        trigger="test",
        force=True,
        freshness_s=0,
        stale_s=3600,
    ).sync_id
    store.add_cost(sync_id, CallCost(1, 1, 0, 1, 10_000))
    batch = Batch(redis_client)
    store.add_cost(sync_id, CallCost(1, 0, 1, 0, 0), batch=batch)  # a free 304
    store.add_cost(sync_id, CallCost(1, 1, 0, 499, 4_990_000), batch=batch)
    batch.execute()
    cost = CallCost.from_record(store.get_sync(sync_id))
    assert cost == CallCost(3, 2, 1, 500, 5_000_000)
    assert cost.as_view() == {
        "calls": 3,
        "counted_calls": 2,
        "not_modified": 1,
        "resources": 500,
        "usd": 5.0,
    }
    assert CallCost.from_record({}).as_view()["usd"] == 0.0


# -- sent ahead: the lease and the announced take in the task's first round trip ---------------
def test_an_admission_sent_ahead_is_the_one_before_would_give(redis_client, key_prefix, clock):
    gate = make_gate(redis_client, key_prefix, clock)
    batch = Batch(redis_client)
    ahead = gate.queue_before(batch, GH, GH.profile_call("octocat"), ME)
    batch.execute()
    admission = gate.resolve(ahead)
    assert admission.granted and admission.lease is not None and admission.grant.probe
    batch = Batch(redis_client)
    second = gate.queue_before(batch, GH, GH.profile_call("octocat"), ME)
    batch.execute()
    refused = gate.resolve(second)  # the probe is out: its lease was given back
    assert refused.reason == QUOTA
    assert gate.leases.held("github", "api.github.com|octocat") == 1
    gate.abandon(admission)
    assert gate.leases.held("github", "api.github.com|octocat") == 0


def test_a_refused_lease_gives_the_take_sent_with_it_back(redis_client, key_prefix, clock):
    class Capped(GitHub):
        CONCURRENCY_CAP = 1

    capped = Capped("https://api.github.com")
    gate = make_gate(redis_client, key_prefix, clock)
    probe = gate.before(capped, capped.profile_call("octocat"), ME)
    gate.after(probe, gh_headers(10, 9, NOON + 5), ok=True)
    held = gate.before(capped, capped.profile_call("octocat"), ME)
    batch = Batch(redis_client)
    ahead = gate.queue_before(batch, capped, capped.profile_call("octocat"), ME)
    batch.execute()
    assert gate.resolve(ahead).reason == CONCURRENCY
    bound = gate.announced.bind(capped, capped.profile_call("octocat"), ME)
    assert gate.announced.state(bound)["5000-3600-all"]["g"] == 2  # the probe and `held`
    gate.abandon(held)


def test_nothing_is_sent_ahead_of_a_spend_budget(redis_client, key_prefix, clock):
    gate = make_gate(redis_client, key_prefix, clock, BUDGET_TWITTER="50/day")
    assert gate.queue_before(Batch(redis_client), X, FIRST, ME) is None
    free = make_gate(redis_client, key_prefix + "f", clock)  # priced, but no budget
    assert free.queue_before(Batch(redis_client), X, FIRST, ME) is not None
