"""QuotaGate against a real Redis (embedded, or REDIS_URL db 3) and a fake clock."""

from __future__ import annotations

import collections
import heapq
import threading
import uuid

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from providers.ratelimits import QuotaLimit, QuotaSpecError, RateLimitInfo
from service.config import ConfigError, load_settings
from state.quota import (
    ADAPTIVE_START,
    DEFAULT_MAX_MARGIN_S,
    MARGIN_HALF_LIFE_S,
    RESET_SKEW_S,
    SHARED_KEYS,
    WINDOW_SLOTS,
    QuotaConfig,
    QuotaGate,
    scope_keys,
)
from state.quota_view import shared_levels
from tests.conftest import redis_connect
from tests.quota_helpers import acquire, fingerprint

#: state against a real Redis: also run on a Redis Cluster (make integration-cluster)
pytestmark = pytest.mark.cluster

T0 = 1_000_000.0
FP = fingerprint("tok-1")


@pytest.fixture
def r(redis_url):
    client = redis_connect(redis_url)
    client.test_prefix = f"t-{uuid.uuid4().hex[:10]}"
    yield client
    for key in client.scan_iter(match=f"{client.test_prefix}:*"):
        client.delete(key)


class FakeClock:
    """Shared fake time; ``step`` advances it on every read (each caller reads once)."""

    def __init__(self, start: float = T0, step: float = 0.0):
        self.now, self.step = start, step
        self.lock = threading.Lock()
        self.local = threading.local()

    def __call__(self) -> float:
        with self.lock:
            self.now += self.step
            self.local.last = self.now
            return self.now


def gate(r, clock, **env) -> QuotaGate:
    return QuotaGate(r, r.test_prefix, QuotaConfig.from_env(env), clock=clock)


def take_all(g, provider, scopes, queue_class, most=10_000) -> int:
    """Grant as many calls as the bucket gives right now."""
    for n in range(most):
        if acquire(g, provider, scopes, queue_class) > 0:
            return n
    return most


# --- one bucket: never over the limit, waits are right -------------------------------


def test_never_more_than_limit_in_any_window_under_concurrent_callers(r):
    clock = FakeClock(step=0.004)
    g = gate(r, clock, QUOTA_GITHUB="10/5/app")
    grants, end = [], T0 + 30

    def hammer():
        while clock.now < end:
            if acquire(g, "github", {}, "normal") == 0.0:
                grants.append(clock.local.last)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    grants.sort()
    busiest = max(sum(1 for u in grants[i:] if u <= t + 5.0) for i, t in enumerate(grants))
    assert busiest <= 10
    assert len(grants) >= 50  # ~10 per 5.08 s over 30 s: the quota is used, not hoarded


def test_whole_budget_at_once_then_exact_wait(r):
    clock = FakeClock()
    g = gate(r, clock, QUOTA_GITHUB="10/5/app")
    assert take_all(g, "github", {}, "normal") == 10
    wait = acquire(g, "github", {}, "normal")
    slot = 5 / WINDOW_SLOTS
    assert 5.0 < wait <= 5.0 + slot + 0.002  # the first slot ages out of the window
    clock.now = T0 + 2
    assert acquire(g, "github", {}, "normal") == pytest.approx(wait - 2, abs=1e-3)
    clock.now = T0 + wait - 0.01
    assert acquire(g, "github", {}, "normal") > 0
    clock.now = T0 + wait
    assert acquire(g, "github", {}, "normal") == 0.0


def test_key_layout_expiry_and_no_raw_tokens(r):
    g = gate(r, FakeClock(), QUOTA_GITHUB="5000/3600/token")
    assert acquire(g, "github", {"token": FP}, "normal") == 0.0
    key = f"{r.test_prefix}:quota:{{github:token:{FP}}}"
    assert r.exists(key) and 0 < r.pttl(key) <= (2 * 3600 + DEFAULT_MAX_MARGIN_S + 60) * 1000
    with pytest.raises(ValueError):
        acquire(g, "github", {"token": "ghp_16C7e42F292c6912E7710c838347Ae178B4a"}, "normal")
    with pytest.raises(ValueError):
        acquire(g, "github", {}, "normal")  # a token limit needs its key
    with pytest.raises(ValueError):
        acquire(g, "github", {"token": FP}, "vip")


# --- a call counts when the provider receives it: margin and settle ------------------------
#
# The provider counts a call at its receiving time r, somewhere between our
# grant t and the answer a (a busy machine, GC, the network: r - t varies).
# ``busiest`` counts calls by r in every window [r_i, r_i + W), as a provider
# counting sliding windows would.

W, L = 5.0, 10


def busiest(times, window=W) -> int:
    times = sorted(times)
    return max(
        (sum(1 for u in times[i:] if u < t + window) for i, t in enumerate(times)), default=0
    )


def run_workers(g, clock, calls, workers: int, settle: bool) -> list[float]:
    """``workers`` callers on the fake clock make ``calls`` (latency, fraction) in turn.

    Each takes quota for a call; refused, it is parked for the wait the gate
    gave; granted, it is busy for the call's latency, then (``settle``) settles
    and takes the next. Returns when the provider received each call: grant +
    fraction × latency. Without ``settle``, on a bucket that has seen no
    answer (margin 0), this is the old accounting: a call counted at its grant.
    """
    scopes, todo, received = {"token": fingerprint(uuid.uuid4().hex)}, list(calls), []
    events = [(clock.now + 0.001 * i, i, None) for i in range(workers)]
    seq = workers
    while events:
        t, _, answered = heapq.heappop(events)
        clock.now = t
        if answered is not None:
            if settle:
                g.settle(answered)
        elif not todo:
            continue
        else:
            decision = g.decide("github", scopes, "whale")
            if not decision.granted:
                seq += 1
                heapq.heappush(events, (t + decision.wait_s, seq, None))
                continue
            latency, fraction = todo.pop(0)
            received.append(t + fraction * latency)
            seq += 1
            heapq.heappush(events, (t + latency, seq, decision))
            continue
        seq += 1
        heapq.heappush(events, (t, seq, None))  # free again: the next call
    assert not todo
    return received


calls_strategy = st.lists(st.tuples(st.floats(0, 1.5), st.floats(0, 1)), min_size=15, max_size=35)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(calls=calls_strategy, workers=st.integers(1, 6))
def test_settled_calls_never_exceed_the_limit_by_receiving_time(r, calls, workers):
    """Whatever each call's latency and wherever in it the provider received the
    call, no window W holds more than L of them: each call is counted until
    one window after its answer."""
    clock = FakeClock()
    g = gate(r, clock, QUOTA_GITHUB=f"{L}/{W:g}/token")
    received = run_workers(g, clock, calls, workers, settle=True)
    assert busiest(received) <= L


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    calls=st.lists(st.tuples(st.floats(0, 0.2), st.floats(0, 1)), min_size=15, max_size=35),
    workers=st.integers(1, 6),
    learned=st.floats(0.05, 2.0),
)
def test_grants_shifted_by_delays_within_the_margin_never_exceed_the_limit(
    r, calls, workers, learned
):
    """Unsettled grants (a worker that died mid-call): with the margin m the bucket
    learned, no window W holds more than L grants shifted by any delays in [0, m]."""
    clock = FakeClock()
    g = gate(r, clock, QUOTA_GITHUB=f"{L}/{W:g}/token")
    scopes = {"token": fingerprint(uuid.uuid4().hex)}  # a bucket of this example's own
    first = g.decide("github", scopes, "whale")  # one answer teaches the margin
    clock.now += learned
    g.settle(first)
    received = [clock.now]  # at the latest: its answer
    clock.now += 0.01
    second = g.decide("github", scopes, "whale")
    assert second.margin_s == pytest.approx(learned, rel=1e-3)
    received.append(clock.now + second.margin_s)
    received += run_workers_on(g, clock, scopes, calls, workers)
    assert busiest(received) <= L


def run_workers_on(g, clock, scopes, calls, workers):
    """``run_workers`` without settling, on a bucket that already learned its margin."""
    todo, received, t = list(calls), [], clock.now
    free = [t + 0.001 * i for i in range(workers)]
    while todo:
        free.sort()
        clock.now = free[0]
        decision = g.decide("github", scopes, "whale")
        if not decision.granted:
            free[0] += decision.wait_s
            continue
        latency, fraction = todo.pop(0)
        received.append(clock.now + fraction * decision.margin_s)
        free[0] += latency
    return received


def test_the_old_accounting_lets_a_slow_first_call_make_eleven(r):
    """What happened on a busy machine (11 of 10 in a sliding 5 s): counting a call
    at its grant, a first call received 0.5 s late shares a provider window with
    the next window's ten. The same workload with settling keeps to ten."""
    calls = [(0.5, 1.0)] + [(0.01, 0.0)] * 20  # the first call reaches the provider at +0.5 s
    found = {}
    for settle in (False, True):  # each run on a token of its own
        clock = FakeClock()
        g = gate(r, clock, QUOTA_GITHUB=f"{L}/{W:g}/token")
        found[settle] = busiest(run_workers(g, clock, calls, 4, settle=settle))
    # without settling and before any answer, the margin is 0: the old accounting
    assert found == {False: L + 1, True: L}


def test_the_old_accounting_fails_the_settled_property(r):
    """Hypothesis, searching the workloads of the settled property above, finds
    ones the old accounting lets exceed L; on the one found, settling keeps to L."""

    def exceeds(example) -> bool:
        calls, workers = example
        clock = FakeClock()
        g = gate(r, clock, QUOTA_GITHUB=f"{L}/{W:g}/token")
        return busiest(run_workers(g, clock, calls, workers, settle=False)) > L

    calls, workers = find(
        st.tuples(calls_strategy, st.integers(1, 6)),
        exceeds,
        settings=settings(
            max_examples=100, database=None, phases=[Phase.generate], derandomize=True
        ),
    )
    clock = FakeClock()
    g = gate(r, clock, QUOTA_GITHUB=f"{L}/{W:g}/token")
    assert busiest(run_workers(g, clock, calls, workers, settle=True)) <= L


def test_a_quick_answer_gives_the_window_back_early(r):
    """The margin (here 1 s, from one slow answer) delays a window only while its
    calls are unanswered: answered after 10 ms, they leave it 10 ms late, not 1 s."""
    clock = FakeClock()
    g = gate(r, clock, QUOTA_GITHUB=f"{L}/{W:g}/token")
    scopes = {"token": FP}
    slow = g.decide("github", scopes, "whale")
    clock.now += 1.0
    g.settle(slow)
    clock.now += W + 1.0  # the slow one has left the window
    start = clock.now
    grants = [g.decide("github", scopes, "whale") for _ in range(L)]
    assert all(d.granted and d.margin_s > 0.9 for d in grants)
    assert acquire(g, "github", scopes, "whale") >= W + 0.9  # unanswered: held to grant + margin
    clock.now += 0.01
    for d in grants:
        g.settle(d)
    wait = acquire(g, "github", scopes, "whale")
    slot = W / WINDOW_SLOTS
    assert W - 0.01 < wait <= W + slot + 0.002  # one window after the answers
    clock.now = start + 0.01 + wait
    assert acquire(g, "github", scopes, "whale") == 0.0


def test_a_slow_answer_keeps_its_call_in_the_window_longer(r):
    clock = FakeClock()
    g = gate(r, clock, QUOTA_GITHUB=f"{L}/{W:g}/token")
    scopes = {"token": FP}
    grants = [g.decide("github", scopes, "whale") for _ in range(L)]
    assert [d.margin_s for d in grants] == [0.0] * L  # nothing learned yet
    clock.now += 3.0  # answered 3 s after the grant: received up to then
    for d in grants:
        g.settle(d)
    clock.now = T0 + W + 0.5  # a window after the grant, not after the answer
    assert acquire(g, "github", scopes, "whale") >= 2.0
    clock.now = T0 + 3.0 + W + W / WINDOW_SLOTS + 0.001
    assert acquire(g, "github", scopes, "whale") == 0.0


def test_the_margin_is_the_slowest_recent_answer_decaying_and_bounded(r):
    clock = FakeClock()
    g = QuotaGate(
        r,
        r.test_prefix,
        QuotaConfig.from_env({"QUOTA_GITHUB": "1000/5/token"}),
        clock=clock,
        max_margin_s=4.0,
    )
    scopes = {"token": FP}

    def answer_after(seconds: float) -> float:
        decision = g.decide("github", scopes, "whale")
        clock.now += seconds
        g.settle(decision)
        return decision.margin_s

    assert answer_after(0.8) == 0.0
    assert answer_after(0.1) == pytest.approx(0.8, rel=1e-3)  # the slowest, not the last
    clock.now += MARGIN_HALF_LIFE_S
    assert answer_after(0.1) == pytest.approx(0.4, rel=1e-2)  # halved in a half-life
    answer_after(30.0)  # a hung call counts as at most the bound
    assert g.decide("github", scopes, "whale").margin_s == pytest.approx(4.0, rel=1e-3)


def test_a_settle_after_a_reset_forgot_the_call_still_counts_it(r):
    """The provider's reset made the gate forget calls accounted before it; one
    answered after the reset was perhaps received after it: it counts again."""
    clock = FakeClock()
    g = gate(r, clock, QUOTA_GITHUB=f"{L}/{W:g}/token")
    scopes = {"token": FP}
    late = g.decide("github", scopes, "whale")
    assert take_all(g, "github", scopes, "whale") == L - 1
    g.observe("github", scopes, RateLimitInfo(remaining=0, reset_at=T0 + 2))
    clock.now = T0 + 2 + RESET_SKEW_S + 0.01
    g.settle(late)  # answered only now
    assert take_all(g, "github", scopes, "whale") == L - 1


# --- what the provider said -----------------------------------------------------------


def test_remaining_zero_blocks_until_reset(r):
    clock = FakeClock()
    g = gate(r, clock)  # defaults: GitHub 5000/h per token
    scopes = {"token": FP}
    g.observe("github", scopes, RateLimitInfo(limit=5000, remaining=0, reset_at=T0 + 30))
    wait = acquire(g, "github", scopes, "normal")
    assert 30 <= wait <= 30 + RESET_SKEW_S + 0.01
    clock.now = T0 + wait
    assert acquire(g, "github", scopes, "normal") == 0.0


def test_never_believe_more_than_remaining(r):
    clock = FakeClock()
    g = gate(r, clock)
    scopes = {"token": FP}
    g.observe("github", scopes, RateLimitInfo(remaining=3, reset_at=T0 + 600))
    assert take_all(g, "github", scopes, "normal") == 3
    # a late response from before those calls says 10: still nothing left
    g.observe("github", scopes, RateLimitInfo(remaining=10, reset_at=T0 + 600))
    assert acquire(g, "github", scopes, "normal") >= 600


def test_reset_aligns_the_window(r):
    clock = FakeClock()
    g = gate(r, clock, QUOTA_GITHUB="10/5/token")
    scopes = {"token": FP}
    assert take_all(g, "github", scopes, "normal") == 10
    # the provider's window ends at T0+3: it forgets our calls then, so do we
    g.observe("github", scopes, RateLimitInfo(remaining=0, reset_at=T0 + 3))
    wait = acquire(g, "github", scopes, "normal")
    assert wait == pytest.approx(3 + RESET_SKEW_S, abs=0.01)
    clock.now = T0 + wait
    assert take_all(g, "github", scopes, "normal") == 10


def test_retry_after_blocks_the_bucket(r):
    clock = FakeClock()
    g = gate(r, clock)
    scopes = {"token": FP}
    g.observe("github", scopes, RateLimitInfo(retry_after=12))
    assert acquire(g, "github", scopes, "normal") == pytest.approx(12, abs=0.01)
    clock.now = T0 + 12.01
    assert acquire(g, "github", scopes, "normal") == 0.0


def test_usage_percent_scales_the_remaining_budget(r):
    clock = FakeClock()
    g = gate(r, clock, QUOTA_FACEBOOK="100/3600/app")
    g.observe("facebook", {"app": SHARED_KEYS["app"]}, RateLimitInfo(usage_percent=90))
    assert take_all(g, "facebook", {}, "normal") == 10
    g.observe("facebook", {"app": SHARED_KEYS["app"]}, RateLimitInfo(usage_percent=100))
    wait = acquire(g, "facebook", {}, "normal")
    assert 0 < wait <= 3600 / 12 + 0.01  # blocked, then one call to read the headers again


# --- shares of a shared bucket ----------------------------------------------------------

FB_APP = {"QUOTA_FACEBOOK": "100/10/app"}


def test_normal_alone_may_use_everything(r):
    assert take_all(gate(r, FakeClock(), **FB_APP), "facebook", {}, "normal") == 100


def test_whale_alone_borrows_but_never_normals_reserve(r):
    g = gate(r, FakeClock(), **FB_APP)
    assert take_all(g, "facebook", {}, "whale") == 50  # its 40 + trickle's unused 10
    assert take_all(g, "facebook", {}, "normal") == 50  # the reserve was kept


def test_trickle_is_capped(r):
    g = gate(r, FakeClock(), **FB_APP)
    assert take_all(g, "facebook", {}, "trickle") == 10
    assert take_all(g, "facebook", {}, "whale") == 40


def test_normal_keeps_its_half_while_whales_hammer(r):
    clock = FakeClock()
    g = gate(r, clock, **FB_APP)
    granted = collections.Counter()
    while clock.now < T0 + 60:
        for queue_class in ("whale", "whale", "whale", "trickle", "normal"):
            granted[queue_class] += acquire(g, "facebook", {}, queue_class) == 0.0
        clock.now += 0.05
    total = sum(granted.values())
    assert granted["normal"] >= 0.5 * total
    assert granted["trickle"] <= 0.1 * total + 1
    assert total >= 0.95 * 100 * 6  # 6 windows, shared out, none wasted


def test_token_buckets_are_not_split(r):
    g = gate(r, FakeClock(), QUOTA_GITHUB="10/5/token")
    assert take_all(g, "github", {"token": FP}, "whale") == 10


def test_a_refused_scope_takes_nothing_from_the_others(r):
    clock = FakeClock()
    g = gate(r, clock, QUOTA_FACEBOOK="2/10/app,5/10/token")
    other = fingerprint("tok-2")
    assert take_all(g, "facebook", {"token": other}, "normal") == 2  # the app is spent
    wait = acquire(g, "facebook", {"token": FP}, "normal")
    assert 10 < wait < 10.5
    token_key = f"{r.test_prefix}:quota:{{facebook:token:{FP}}}"
    assert not [f for f in r.hkeys(token_key) if f.startswith(b"s")]  # refunded
    clock.now = T0 + wait
    assert take_all(g, "facebook", {"token": FP}, "normal") == 2


def test_the_shared_bucket_a_call_takes_is_the_one_the_views_read(r):
    """A worker names its scopes with ``scope_keys``; the dashboard and ``/metrics``
    read ``shared_levels``: both reach the same shared bucket (``SHARED_KEYS``)."""
    g = gate(r, FakeClock(), QUOTA_FACEBOOK="100/3600/app,50/3600/token")
    scopes = scope_keys(("token", "app"), FP)
    assert scopes == {"token": FP, "app": SHARED_KEYS["app"]}
    for _ in range(3):
        assert g.decide("facebook", scopes, "whale").granted
    (app,) = shared_levels(g, "facebook", now=T0)
    assert (app.scope, app.key, app.used["whale"], app.used_total) == ("app", "app", 3, 3)
    assert scope_keys(("ip",), FP) == {"ip": SHARED_KEYS["ip"]}


# --- adaptive limits --------------------------------------------------------------------


class HiddenLimit:
    """A provider that publishes nothing and rejects calls past 20 in any second."""

    def __init__(self, limit: int = 20, window: float = 1.0):
        self.limit, self.window, self.calls = limit, window, collections.deque()

    def call(self, now: float) -> bool:
        while self.calls and self.calls[0] <= now - self.window:
            self.calls.popleft()
        if len(self.calls) >= self.limit:
            return False
        self.calls.append(now)
        return True


def test_adaptive_rate_finds_an_unpublished_limit(r):
    clock = FakeClock()
    g = gate(r, clock, QUOTA_LINKEDIN="100/1/token/adaptive")
    scopes, provider = {"token": FP}, HiddenLimit()
    assert g.adaptive_rate("linkedin", "token", FP) == ADAPTIVE_START * 100
    ok = rejected = 0
    while clock.now < T0 + 60:
        wait = acquire(g, "linkedin", scopes, "normal")
        if wait:
            clock.now += wait  # the task would be parked this long
            continue
        success = provider.call(clock.now)
        g.record_outcome("linkedin", scopes, rejected=not success)
        if clock.now >= T0 + 10:  # after warm-up
            ok += success
            rejected += not success
        clock.now += 0.002  # the call itself
    assert rejected <= 0.05 * (ok + rejected)
    assert ok >= 0.8 * 20 * 50
    assert 10 <= g.adaptive_rate("linkedin", "token", FP) <= 25


def test_adaptive_state_is_shared_by_all_gates(r):
    clock = FakeClock()
    one, two = (gate(r, clock, QUOTA_LINKEDIN="100/1/token/adaptive") for _ in range(2))
    for _ in range(10):
        one.record_outcome("linkedin", {"token": FP}, rejected=False)
    assert two.adaptive_rate("linkedin", "token", FP) == pytest.approx(10 + 10 * 0.5)


# --- configuration ----------------------------------------------------------------------


def test_documented_defaults():
    config = QuotaConfig.from_env({})
    assert config.limits["github"] == (QuotaLimit("token", 5000, 3600.0),)
    assert config.limits["twitter"] == (QuotaLimit("token", 15, 900.0),)
    assert config.limits["mastodon"] == (QuotaLimit("token", 300, 300.0),)
    assert {lim.scope for lim in config.limits["facebook"]} == {"app", "token"}
    assert all(lim.adaptive for lim in config.limits["facebook"] + config.limits["linkedin"])
    assert config.shares["github"] == {"normal": 0.5, "whale": 0.4, "trickle": 0.1}


def test_environment_overrides():
    config = QuotaConfig.from_env(
        {
            "QUOTA_TWITTER": "15/900/token,150/3600/ip",
            "QUOTA_SHARES": "normal:0.6,whale:0.3,trickle:0.1",
            "QUOTA_SHARES_GITHUB": "normal:0.7,whale:0.3",
        }
    )
    assert config.limits["twitter"] == (
        QuotaLimit("token", 15, 900.0),
        QuotaLimit("ip", 150, 3600.0),
    )
    assert config.shares["mastodon"] == {"normal": 0.6, "whale": 0.3, "trickle": 0.1}
    assert config.shares["github"] == {"normal": 0.7, "whale": 0.3, "trickle": 0.0}


@pytest.mark.parametrize(
    "env",
    [
        {"QUOTA_GITHUB": "5000/hour/token"},
        {"QUOTA_GITHUB": "5000/3600/planet"},
        {"QUOTA_GITHUB": "5000/3600/token/fast"},
        {"QUOTA_GITHUB": "10/5/token,20/5/token"},
        {"QUOTA_SHARES": "normal:0.6,whale:0.6"},
        {"QUOTA_SHARES_GITHUB": "vip:0.5"},
    ],
)
def test_bad_configuration_is_refused(env):
    with pytest.raises(QuotaSpecError):
        QuotaConfig.from_env(env)
    with pytest.raises(ConfigError):  # and the service refuses to start on it
        load_settings(env)


def test_a_configured_quota_is_known_and_gives_its_windows():
    default = QuotaConfig.from_env({})
    assert not default.configured("github") and default.windows() == {}
    mine = QuotaConfig.from_env(
        {"QUOTA_GITHUB": "10/5/token", "QUOTA_LINKEDIN": "40/2/token/adaptive"}
    )
    assert mine.configured("github") and mine.configured("linkedin")
    assert mine.windows() == {"github": {10: 5.0}, "linkedin": {}}  # adaptive: no window known
