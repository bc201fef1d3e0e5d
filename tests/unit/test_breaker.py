"""The per-provider circuit breaker against a real Redis, with a clock the test moves."""

from __future__ import annotations

import pytest

from state.breaker import BreakerConfig, CircuitBreaker

#: state against a real Redis: also run on a Redis Cluster (make integration-cluster)
pytestmark = pytest.mark.cluster


@pytest.fixture
def breaker(redis_client, key_prefix, clock):
    config = BreakerConfig(
        threshold=3, cooldown_s=5.0, max_cooldown_s=20.0, probe_lease_s=10.0, probe_poll_s=1.0
    )
    return CircuitBreaker(redis_client, key_prefix, config, clock=clock)


def fail(breaker, n=1):
    return [breaker.record("github", ok=False) for _ in range(n)][-1]


def test_closed_until_threshold_consecutive_failures(breaker):
    assert breaker.allow("github").verdict == "closed"
    assert fail(breaker, 2) == "closed"
    assert breaker.allow("github").verdict == "go"  # failures are being counted
    breaker.record("github", ok=True)
    assert fail(breaker, 2) == "closed"  # a success in between resets the count
    assert fail(breaker) == "open"


def test_open_means_wait_until_the_cooldown_ends(breaker, clock):
    fail(breaker, 3)
    verdict = breaker.allow("github")
    assert not verdict.allowed and verdict.wait_s == pytest.approx(5.0)
    clock.now += 4
    assert breaker.allow("github").wait_s == pytest.approx(1.0)


def test_one_probe_at_a_time_and_its_success_closes(breaker, clock):
    fail(breaker, 3)
    clock.now += 5
    verdicts = [breaker.allow("github") for _ in range(20)]
    assert [v.verdict for v in verdicts].count("probe") == 1
    assert all(v.wait_s == pytest.approx(1.0) for v in verdicts[1:])
    breaker.record("github", ok=True)
    assert breaker.allow("github").verdict == "closed"


def test_a_failed_probe_reopens_with_a_longer_cooldown(breaker, clock):
    fail(breaker, 3)
    for expected in (10.0, 20.0, 20.0):  # doubled, capped
        clock.now += 100
        assert breaker.allow("github").verdict == "probe"
        assert fail(breaker) == "open"
        assert breaker.allow("github").wait_s == pytest.approx(expected)


def test_a_probe_that_never_reports_hands_over_after_its_lease(breaker, clock):
    fail(breaker, 3)
    clock.now += 5
    assert breaker.allow("github").verdict == "probe"  # its worker dies
    clock.now += 10
    assert breaker.allow("github").verdict == "probe"


def test_providers_have_their_own_breakers(breaker):
    fail(breaker, 3)
    assert breaker.allow("twitter").verdict == "closed"


def test_calls_to_a_dead_provider_are_bounded_by_the_breaker(breaker, clock):
    """Many pages against a provider that is down for 60 s: calls per provider, not per page."""
    calls, pages, step = 0, 200, 0.1
    parked_until = dict.fromkeys(range(pages), clock.now)
    end = clock.now + 60
    while clock.now < end:
        for page, due in parked_until.items():
            if due > clock.now:
                continue
            verdict = breaker.allow("github")
            if not verdict.allowed:
                parked_until[page] = clock.now + verdict.wait_s
                continue
            calls += 1
            fail(breaker)  # the provider answers 503
            parked_until[page] = clock.now + 1.0  # the page's own backoff
        clock.now += step
    # threshold, then one probe per cooldown (5, 10, 20, 20 ... s)
    assert calls <= 3 + 60 / 5


def test_while_open_it_names_the_failure(breaker):
    for _ in range(3):
        breaker.record("github", ok=False, kind="over_capacity")
    assert breaker.allow("github").last_kind == "over_capacity"
