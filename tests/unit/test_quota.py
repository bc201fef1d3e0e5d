"""QuotaGate against a real Redis (embedded, or REDIS_URL db 3) and a fake clock."""
from __future__ import annotations

import collections
import threading
import uuid

import pytest

from providers.ratelimits import QuotaLimit, QuotaSpecError
from service.config import ConfigError, load_settings
from state.quota import (
    ADAPTIVE_START, RESET_SKEW_S, WINDOW_SLOTS, QuotaConfig, QuotaGate, fingerprint,
)
from providers.ratelimits import RateLimitInfo

from tests.conftest import redis_connect

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
        if g.acquire(provider, scopes, queue_class) > 0:
            return n
    return most


# --- one bucket: never over the limit, waits are right -------------------------------

def test_never_more_than_limit_in_any_window_under_concurrent_callers(r):
    clock = FakeClock(step=0.004)
    g = gate(r, clock, QUOTA_GITHUB="10/5/app")
    grants, end = [], T0 + 30

    def hammer():
        while clock.now < end:
            if g.acquire("github", {}, "normal") == 0.0:
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
    wait = g.acquire("github", {}, "normal")
    slot = 5 / WINDOW_SLOTS
    assert 5.0 < wait <= 5.0 + slot + 0.002  # the first slot ages out of the window
    clock.now = T0 + 2
    assert g.acquire("github", {}, "normal") == pytest.approx(wait - 2, abs=1e-3)
    clock.now = T0 + wait - 0.01
    assert g.acquire("github", {}, "normal") > 0
    clock.now = T0 + wait
    assert g.acquire("github", {}, "normal") == 0.0


def test_key_layout_expiry_and_no_raw_tokens(r):
    g = gate(r, FakeClock(), QUOTA_GITHUB="5000/3600/token")
    assert g.acquire("github", {"token": FP}, "normal") == 0.0
    key = f"{r.test_prefix}:quota:{{github:token:{FP}}}"
    assert r.exists(key) and 0 < r.pttl(key) <= (2 * 3600 + 60) * 1000
    with pytest.raises(ValueError):
        g.acquire("github", {"token": "ghp_16C7e42F292c6912E7710c838347Ae178B4a"}, "normal")
    with pytest.raises(ValueError):
        g.acquire("github", {}, "normal")  # a token limit needs its key
    with pytest.raises(ValueError):
        g.acquire("github", {"token": FP}, "vip")


# --- what the provider said -----------------------------------------------------------

def test_remaining_zero_blocks_until_reset(r):
    clock = FakeClock()
    g = gate(r, clock)  # defaults: GitHub 5000/h per token
    scopes = {"token": FP}
    g.observe("github", scopes, RateLimitInfo(limit=5000, remaining=0, reset_at=T0 + 30))
    wait = g.acquire("github", scopes, "normal")
    assert 30 <= wait <= 30 + RESET_SKEW_S + 0.01
    clock.now = T0 + wait
    assert g.acquire("github", scopes, "normal") == 0.0


def test_never_believe_more_than_remaining(r):
    clock = FakeClock()
    g = gate(r, clock)
    scopes = {"token": FP}
    g.observe("github", scopes, RateLimitInfo(remaining=3, reset_at=T0 + 600))
    assert take_all(g, "github", scopes, "normal") == 3
    # a late response from before those calls says 10: still nothing left
    g.observe("github", scopes, RateLimitInfo(remaining=10, reset_at=T0 + 600))
    assert g.acquire("github", scopes, "normal") >= 600


def test_reset_aligns_the_window(r):
    clock = FakeClock()
    g = gate(r, clock, QUOTA_GITHUB="10/5/token")
    scopes = {"token": FP}
    assert take_all(g, "github", scopes, "normal") == 10
    # the provider's window ends at T0+3: it forgets our calls then, so do we
    g.observe("github", scopes, RateLimitInfo(remaining=0, reset_at=T0 + 3))
    wait = g.acquire("github", scopes, "normal")
    assert wait == pytest.approx(3 + RESET_SKEW_S, abs=0.01)
    clock.now = T0 + wait
    assert take_all(g, "github", scopes, "normal") == 10


def test_retry_after_blocks_the_bucket(r):
    clock = FakeClock()
    g = gate(r, clock)
    scopes = {"token": FP}
    g.observe("github", scopes, RateLimitInfo(retry_after=12))
    assert g.acquire("github", scopes, "normal") == pytest.approx(12, abs=0.01)
    clock.now = T0 + 12.01
    assert g.acquire("github", scopes, "normal") == 0.0


def test_usage_percent_scales_the_remaining_budget(r):
    clock = FakeClock()
    g = gate(r, clock, QUOTA_FACEBOOK="100/3600/app")
    g.observe("facebook", {"app": "all"}, RateLimitInfo(usage_percent=90))
    assert take_all(g, "facebook", {}, "normal") == 10
    g.observe("facebook", {"app": "all"}, RateLimitInfo(usage_percent=100))
    wait = g.acquire("facebook", {}, "normal")
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
            granted[queue_class] += g.acquire("facebook", {}, queue_class) == 0.0
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
    wait = g.acquire("facebook", {"token": FP}, "normal")
    assert 10 < wait < 10.5
    token_key = f"{r.test_prefix}:quota:{{facebook:token:{FP}}}"
    assert not [f for f in r.hkeys(token_key) if f.startswith(b"s")]  # refunded
    clock.now = T0 + wait
    assert take_all(g, "facebook", {"token": FP}, "normal") == 2


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
        wait = g.acquire("linkedin", scopes, "normal")
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
    config = QuotaConfig.from_env({
        "QUOTA_TWITTER": "15/900/token,150/3600/ip",
        "QUOTA_SHARES": "normal:0.6,whale:0.3,trickle:0.1",
        "QUOTA_SHARES_GITHUB": "normal:0.7,whale:0.3",
    })
    assert config.limits["twitter"] == (QuotaLimit("token", 15, 900.0), QuotaLimit("ip", 150, 3600.0))
    assert config.shares["mastodon"] == {"normal": 0.6, "whale": 0.3, "trickle": 0.1}
    assert config.shares["github"] == {"normal": 0.7, "whale": 0.3, "trickle": 0.0}


@pytest.mark.parametrize("env", [
    {"QUOTA_GITHUB": "5000/hour/token"},
    {"QUOTA_GITHUB": "5000/3600/planet"},
    {"QUOTA_GITHUB": "5000/3600/token/fast"},
    {"QUOTA_GITHUB": "10/5/token,20/5/token"},
    {"QUOTA_SHARES": "normal:0.6,whale:0.6"},
    {"QUOTA_SHARES_GITHUB": "vip:0.5"},
])
def test_bad_configuration_is_refused(env):
    with pytest.raises(QuotaSpecError):
        QuotaConfig.from_env(env)
    with pytest.raises(ConfigError):  # and the service refuses to start on it
        load_settings(env)
