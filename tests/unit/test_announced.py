"""AnnouncedGate against a real Redis and a hand-moved clock: the provider's word is the quota."""

from __future__ import annotations

import heapq
import math
import threading

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from providers.announced import AnnouncedRule, Announcement, AnswerReport
from providers.bluesky import Bluesky
from providers.github import GitHub
from providers.mastodon import Mastodon
from providers.provider import HttpCall
from state.announced import AnnouncedGate, Caller
from tests.conftest import ManualClock

#: state against a real Redis: also run on a Redis Cluster (make integration-cluster)
pytestmark = pytest.mark.cluster

T0 = 1_000_000.0
GH = GitHub("https://api.github.com")
ME = Caller("octocat", "ab" * 8, "api.github.com")
PROFILE = GH.profile_call("octocat")


def make_gate(redis_client, key_prefix, clock, **kwargs) -> AnnouncedGate:
    kwargs.setdefault("skew_s", 0.0)
    kwargs.setdefault("max_margin_s", 2.0)
    return AnnouncedGate(redis_client, key_prefix, clock, **kwargs)


def told(limit, remaining, reset, **kwargs) -> AnswerReport:
    return AnswerReport((Announcement(limit, remaining, reset, **kwargs),))


def take_all(gate, bound, most=20_000, queue_class="normal") -> list:
    grants = []
    for _ in range(most):
        grant = gate.take(bound, queue_class)
        if not grant.granted:
            return grants
        grants.append(grant)
    return grants


@pytest.fixture
def clock():
    return ManualClock(T0)


@pytest.fixture
def gate(redis_client, key_prefix, clock):
    return make_gate(redis_client, key_prefix, clock)


@pytest.fixture
def bound(gate):
    return gate.bind(GH, PROFILE, ME)


# -- the first answer sets the key; the announced limit governs --------------------------
def test_a_rule_not_yet_heard_lets_one_call_out_and_its_answer_sets_the_rule(gate, bound, clock):
    probe = gate.take(bound)
    assert probe.granted and probe.probe
    waiting = gate.take(bound)
    assert not waiting.granted and waiting.wait_s <= 0.25  # no fan-out on the config's word
    clock.now += 0.1
    assert gate.answer(bound, probe, told(10, 9, T0 + 5)) == ["5000-3600-all"]
    assert len(take_all(gate, bound)) == 9  # 10 per 5 s, as announced, not 5,000/h
    assert gate.take(bound).wait_s == pytest.approx(T0 + 5 - clock.now)


def test_at_the_reset_the_rule_refills_to_the_announced_limit_not_the_configured(
    gate, bound, clock
):
    probe = gate.take(bound)
    gate.answer(bound, probe, told(10, 9, T0 + 5))
    for grant in take_all(gate, bound):
        gate.answer(bound, grant, told(10, 0, T0 + 5))
    for window in range(1, 4):
        clock.now = T0 + 5 * window + 0.01
        grants = take_all(gate, bound)
        assert len(grants) == 10, window  # never 5,000
        for n, grant in enumerate(grants):
            gate.answer(bound, grant, told(10, 9 - n, T0 + 5 * window + 5))


def test_without_reports_the_next_window_ends_at_the_latest_it_can(gate, bound, clock):
    probe = gate.take(bound)
    gate.answer(bound, probe, told(10, 9, T0 + 5))
    take_all(gate, bound)
    clock.now = T0 + 5.5  # a new window; its first call may arrive max_margin later
    grants = take_all(gate, bound)
    assert len(grants) == 10
    wait = gate.take(bound).wait_s
    assert wait == pytest.approx(2.0 + 3600, abs=0.01)  # the documented window: the safe side


def test_a_larger_announced_limit_replaces_the_prior_too(gate, bound, clock):
    probe = gate.take(bound)
    gate.answer(bound, probe, told(15000, 14999, T0 + 3600))  # an Enterprise Cloud app
    grants = [gate.take(bound, cost=500) for _ in range(31)]
    assert sum(g.granted for g in grants) == 29  # 14,500 of 14,999 left; 5,000 configured


def test_the_announced_limit_lapses_without_news_and_the_rule_probes_again(
    redis_client, key_prefix, clock
):
    gate = make_gate(redis_client, key_prefix, clock, ttl_s=100.0)
    bound = gate.bind(GH, PROFILE, ME)
    probe = gate.take(bound)
    gate.answer(bound, probe, told(10, 9, T0 + 5))
    assert gate.state(bound)["5000-3600-all"]["heard"] == pytest.approx(T0 + 7200)  # two windows
    clock.now = T0 + 7201
    again = gate.take(bound)
    assert again.granted and again.probe
    assert not gate.take(bound).granted


# -- calls in flight across a window's end -------------------------------------------------
def test_calls_out_at_the_reset_count_in_the_next_window(gate, bound, clock):
    probe = gate.take(bound)
    gate.answer(bound, probe, told(10, 9, T0 + 5))
    early = take_all(gate, bound, most=4)  # granted more than max_margin before the reset:
    clock.now = T0 + 4.0  # they arrived in this window
    out = take_all(gate, bound)  # 5 out, none answered
    assert len(out) == 5
    clock.now = T0 + 5.1
    assert len(take_all(gate, bound)) == 5  # the 5 may all land in the new window
    for grant in early + out:
        gate.answer(bound, grant)


def test_a_call_answered_near_the_reset_is_carried(redis_client, key_prefix, clock):
    gate = make_gate(redis_client, key_prefix, clock, skew_s=1.0)
    bound = gate.bind(GH, PROFILE, ME)
    probe = gate.take(bound)
    gate.answer(bound, probe, told(10, 9, T0 + 5))
    late = take_all(gate, bound)
    clock.now = T0 + 4.5  # within the skew of the reset: it may have arrived after it
    for grant in late:
        gate.answer(bound, grant)
    clock.now = T0 + 6.1
    assert len(take_all(gate, bound)) == 1


def test_a_call_the_provider_did_not_count_is_given_back(gate, bound, clock):
    probe = gate.take(bound)
    gate.answer(bound, probe, told(10, 9, T0 + 5))
    grants = take_all(gate, bound)
    gate.answer(bound, grants[0], told(10, 1, T0 + 5), counted=False)  # a free 304
    assert len(take_all(gate, bound)) == 1


# -- reports: others' calls, not ours twice ---------------------------------------------
def test_a_fan_out_s_reports_do_not_count_our_calls_twice(gate, bound, clock):
    probe = gate.take(bound)
    gate.answer(bound, probe, told(100, 99, T0 + 60))
    fan = take_all(gate, bound, most=50)
    # answered out of order, each remaining as the provider counted at its arrival
    for i in (7, 3, 49, 0, 25, 11):
        gate.answer(bound, fan[i], told(100, 99 - (i + 1), T0 + 60))
    assert len(take_all(gate, bound)) == 49


def test_another_app_s_calls_on_the_pooled_limit_are_seen(gate, bound, clock):
    probe = gate.take(bound)
    gate.answer(bound, probe, told(100, 99, T0 + 60))
    grants = take_all(gate, bound, most=10)
    for grant in grants:
        gate.answer(bound, grant)
    # the provider counted 51: ours are 11, so 40 are someone else's
    gate.answer(bound, None, told(100, 49, T0 + 60))
    assert len(take_all(gate, bound)) == 49


def test_a_late_report_from_an_ended_window_changes_nothing(gate, bound, clock):
    probe = gate.take(bound)
    gate.answer(bound, probe, told(100, 99, T0 + 60))
    clock.now = T0 + 60.5
    fresh = gate.take(bound)
    gate.answer(bound, fresh, told(100, 99, T0 + 120))
    gate.answer(bound, None, told(100, 0, T0 + 60))  # the old window's last word
    assert len(take_all(gate, bound)) == 99


def test_a_reset_later_than_the_known_one_begins_a_new_window(gate, bound, clock):
    probe = gate.take(bound)
    gate.answer(bound, probe, told(10, 9, T0 + 5))
    take_all(gate, bound)
    clock.now = T0 + 4.9  # the provider's clock is ahead: it has begun the next window
    gate.answer(bound, None, told(10, 9, T0 + 10))
    assert len(take_all(gate, bound)) == 9


def test_the_call_whose_answer_shows_a_new_window_counts_in_it(gate, bound, clock):
    clock.now = T0 + 0.37
    gate.answer(bound, gate.take(bound), told(4, 3, T0 + 6))  # it ends at 5.37, said 6
    clock.now = T0 + 5.5  # the provider's window has ended; ours not yet
    a, b, c = take_all(gate, bound)
    # a and c reached the provider's new window, b is still on its way
    gate.answer(bound, a, told(4, 2, T0 + 11))
    assert len(take_all(gate, bound)) == 1
    for grant in (b, c):
        gate.answer(bound, grant)


def test_retry_after_blocks_the_key_whatever_the_status(gate, bound, clock):
    probe = gate.take(bound)
    gate.answer(bound, probe, AnswerReport(retry_after=30.0))
    assert gate.take(bound).wait_s == pytest.approx(30.0)
    clock.now += 30.01
    assert gate.take(bound).granted


def test_a_report_for_another_github_resource_is_not_core_s(gate, bound, clock):
    probe = gate.take(bound)
    gate.answer(bound, probe, told(30, 29, T0 + 60, resource="search"))
    assert gate.state(bound)["5000-3600-all"].get("lim") is None


# -- Mastodon: overlapping rules, one set of headers --------------------------------------
MASTO = Mastodon("https://fosstodon.org")
PAGING = HttpCall("GET", "https://fosstodon.org/api/v1/accounts/1/followers?limit=80&max_id=77")
FIRST_PAGE = MASTO.page_call("1", MASTO.first_cursor("1"))
TOOT = Caller("alice", "cd" * 8, "fosstodon.org")
W0 = 1_000_800.0  # a multiple of 300 and of 900


def test_a_paging_call_takes_from_every_rule_that_applies(gate, clock):
    clock.now = W0 + 10
    paging, plain = gate.bind(MASTO, PAGING, TOOT), gate.bind(MASTO, FIRST_PAGE, TOOT)
    assert paging.redis_key == plain.redis_key  # one key: one script takes from all
    assert {r.rule_id for r in paging.rules} == {"300-300-all", "1500-300-all", "300-900-paging"}
    assert {r.rule_id for r in plain.rules} == {"300-300-all", "1500-300-all"}
    assert len(take_all(gate, paging)) == 300  # no probe: Mastodon speaks of the tightest only
    assert not gate.take(plain).granted  # the 300 / 5 min is spent too
    clock.now = W0 + 300.01  # the 5-minute windows end; the paging one does not
    assert len(take_all(gate, plain)) == 300
    clock.now = W0 + 600.01
    assert not gate.take(paging).granted
    assert gate.take(paging).wait_s == pytest.approx(W0 + 900 - clock.now, abs=0.01)


def test_a_report_goes_to_the_rule_whose_aligned_window_it_names(gate, clock):
    clock.now = W0 + 310
    paging = gate.bind(MASTO, PAGING, TOOT)
    grant = gate.take(paging)
    # 300 left of 300 ... the reset is the paging window's (a multiple of 900, 590 s away)
    applied = gate.answer(paging, grant, told(300, 120, W0 + 900.4))
    assert applied == ["300-900-paging"]
    assert gate.state(paging)["300-900-paging"]["oth"] == 179
    assert len(take_all(gate, paging)) == 120


def test_a_limit_the_instance_changed_goes_to_the_nearest_rule(gate, clock):
    clock.now = W0 + 10
    plain = gate.bind(MASTO, FIRST_PAGE, TOOT)
    applied = gate.answer(plain, gate.take(plain), told(200, 199, W0 + 300.2))
    assert applied == ["300-300-all"]
    assert len(take_all(gate, plain)) == 199


def test_a_window_the_instance_changed_still_finds_its_rule(gate, clock):
    clock.now = W0 + 10
    plain = gate.bind(MASTO, FIRST_PAGE, TOOT)
    applied = gate.answer(plain, gate.take(plain), told(40, 39, W0 + 37))  # 40 per 37 s
    assert applied == ["300-300-all"]
    assert len(take_all(gate, plain)) == 39


# -- shared rules keep the queue classes' shares ----------------------------------------------
def test_whales_leave_normal_its_share_of_the_egress_budget(redis_client, key_prefix, clock):
    gate = make_gate(redis_client, key_prefix, clock)
    sky = Bluesky("https://pds.example")
    bound = gate.bind(sky, sky.profile_call("alice.example"), Caller("did:plc:a", "ef" * 8, "pds"))
    probe = gate.take(bound, "normal")
    gate.answer(bound, probe, told(100, 99, T0 + 300, window_s=300.0))
    whales = take_all(gate, bound, queue_class="whale")
    trickle = take_all(gate, bound, queue_class="trickle")
    assert len(whales) + len(trickle) == 50  # normal's 50 % stays free
    assert len(trickle) <= 10
    assert len(take_all(gate, bound, queue_class="normal")) == 49


# -- whatever the sequence, the provider never says 429 -------------------------------------
class FixedWindows:
    """A provider's counting, as the simulator and the real ones do it: fixed windows per rule,
    opened by the first arrival (or aligned), headers for the rule with the fewest left."""

    def __init__(self, rules):
        self.rules = rules  # (limit, window, aligned, paging_only)
        self.windows = [[None, 0] for _ in rules]
        self.rejected = 0

    def arrive(self, t: float, paging: bool = False) -> Announcement:
        tightest, ok = None, True
        active = []
        for (limit, window, aligned, paging_only), state in zip(self.rules, self.windows):
            if paging_only and not paging:
                continue
            if state[0] is None or t >= state[0] + window:
                state[0], state[1] = (math.floor(t / window) * window if aligned else t), 0
            active.append((limit, window, state))
            ok = ok and state[1] < limit
        if not ok:
            self.rejected += 1
        for limit, window, state in active:
            state[1] += ok
            left = Announcement(limit, max(0, limit - state[1]), math.ceil(state[0] + window))
            if tightest is None or left.remaining < tightest.remaining:
                tightest = left
        return tightest


def run_calls(gate, bound, provider, plan, clock, paging=False) -> int:
    """Drive ``plan`` ((pause, latency) per attempt) through the gate; answers carry headers."""
    events, order, granted = [], 0, 0
    for pause, latency in plan:
        target = clock.now + pause
        while events and events[0][0] <= target:
            at, _, kind, grant, found = heapq.heappop(events)
            clock.now = max(clock.now, at)
            if kind == "arrive":
                found = provider.arrive(clock.now, paging)
                order += 1
                heapq.heappush(events, (clock.now + latency / 2, order, "answer", grant, found))
            else:
                gate.answer(bound, grant, AnswerReport((found,)))
        clock.now = target
        grant = gate.take(bound)
        if grant.granted:
            granted += 1
            order += 1
            heapq.heappush(events, (clock.now + latency / 2, order, "arrive", grant, None))
    return granted


plans = st.lists(
    st.tuples(
        st.one_of(st.just(0.0), st.floats(0, 0.5), st.floats(0, 6)),  # bursts and pauses
        st.one_of(st.just(0.0), st.just(2.0), st.floats(0, 2.0)),  # latency: ≤ max_margin
    ),
    min_size=30,
    max_size=200,
)


def test_a_slow_call_granted_at_a_window_s_end_counts_in_the_next(redis_client, key_prefix, clock):
    clock.now = T0 + 0.37
    gate = make_gate(redis_client, key_prefix, clock)
    bound = gate.bind(GH, PROFILE, ME)
    provider = FixedWindows([(2, 1.0, False, False)])
    # the probe; a call 1.5 s later that takes 1 s to arrive (the provider's window has
    # ended: it opens the next); then calls as soon as the gate allows
    plan = [(0.0, 0.0), (1.5, 2.0), (0.2, 0.0), (0.0, 0.0), (0.0, 0.0), (0.05, 0.0), (3, 0.0)]
    assert run_calls(gate, bound, provider, plan, clock) == 4
    assert provider.rejected == 0


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=plans, limit=st.integers(1, 12), window=st.sampled_from([1.0, 3.0, 5.0]))
def test_no_sequence_of_grants_passes_the_announced_limit(
    redis_client, key_prefix, plan, limit, window
):
    clock = ManualClock(T0 + 0.37)
    gate = make_gate(redis_client, f"{key_prefix}:{limit}:{window}:{len(plan)}", clock)
    bound = gate.bind(GH, PROFILE, ME)  # configured: 5,000 per hour
    redis_client.delete(bound.redis_key)
    provider = FixedWindows([(limit, window, False, False)])
    granted = run_calls(gate, bound, provider, plan, clock)
    assert provider.rejected == 0
    event(f"windows used: {min(granted // limit, 5)}+")
    assert granted >= 1


MASTO_SMALL = (  # Mastodon's shape, small enough for hypothesis
    AnnouncedRule(6, 30, "account", told="tightest", aligned=True),
    AnnouncedRule(9, 30, "account", told="tightest", aligned=True),
    AnnouncedRule(4, 90, "account", "paging", told="tightest", aligned=True),
)


class SmallMastodon(Mastodon):
    ANNOUNCED_RULES = MASTO_SMALL


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=plans, paging=st.booleans())
def test_overlapping_aligned_rules_are_never_passed(redis_client, key_prefix, plan, paging):
    clock = ManualClock(W0 + 0.37)
    gate = make_gate(redis_client, f"{key_prefix}:m:{len(plan)}:{paging}", clock)
    small = SmallMastodon("https://m.example")
    call = PAGING if paging else FIRST_PAGE
    bound = gate.bind(small, call, TOOT)
    redis_client.delete(bound.redis_key)
    provider = FixedWindows(
        [(r.limit, r.window_s, True, r.applies_to == "paging") for r in MASTO_SMALL]
    )
    run_calls(gate, bound, provider, plan, clock, paging=paging)
    assert provider.rejected == 0


def test_threads_never_take_more_than_the_announced_limit(redis_url, key_prefix, clock):
    from tests.conftest import redis_connect

    first = make_gate(redis_connect(redis_url), key_prefix, clock)
    bound = first.bind(GH, PROFILE, ME)
    first.answer(bound, first.take(bound), told(40, 39, T0 + 5))
    counts = []

    def worker():
        gate = make_gate(redis_connect(redis_url), key_prefix, clock)
        counts.append(len(take_all(gate, bound, most=100)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts) == 39


# -- a window our own call opened, of known length, ends on our clock ------------------------
def test_a_window_our_call_opened_ends_one_known_window_after_its_answer(
    redis_client, key_prefix, clock
):
    """QUOTA_GITHUB=10/5/token: the configured window is what the headers do not say."""
    gate = make_gate(redis_client, key_prefix, clock, skew_s=1.0, windows={"github": {10: 5.0}})
    bound = gate.bind(GH, PROFILE, ME)
    probe = gate.take(bound)
    clock.now += 0.05  # answered 50 ms after its grant; the provider says reset at T0 + 6
    gate.answer(bound, probe, told(10, 9, T0 + 6), ok=True)
    assert len(take_all(gate, bound)) == 9
    wait = gate.take(bound).wait_s
    # one window after the opening answer (T0 + 5.05), not the reset's second + skew (T0 + 7)
    assert clock.now + wait == pytest.approx(T0 + 5.05)
    clock.now = T0 + 5.06
    assert len(take_all(gate, bound)) == 10


def test_without_a_known_window_the_reset_and_the_skew_bound_it(redis_client, key_prefix, clock):
    """The documented 5,000 an hour says nothing of a 10 per 5 s window: the reset does."""
    gate = make_gate(redis_client, key_prefix, clock, skew_s=1.0)
    bound = gate.bind(GH, PROFILE, ME)
    probe = gate.take(bound)
    clock.now += 0.05
    gate.answer(bound, probe, told(10, 9, T0 + 6), ok=True)
    take_all(gate, bound)
    assert clock.now + gate.take(bound).wait_s == pytest.approx(T0 + 7)


def test_the_documented_window_is_known_while_the_documented_limit_is_announced(
    redis_client, key_prefix, clock
):
    gate = make_gate(redis_client, key_prefix, clock, skew_s=1.0)
    bound = gate.bind(GH, PROFILE, ME)
    probe = gate.take(bound)
    clock.now += 0.2
    gate.answer(bound, probe, told(5000, 4999, T0 + 3601), ok=True)
    state = gate.state(bound)["5000-3600-all"]
    assert state["kw"] == 3600 and state["oend"] == pytest.approx(T0 + 3600.2)
    assert state["olow"] == pytest.approx(math.floor(T0) + 3600)


def test_a_report_that_our_call_did_not_open_sets_no_early_end(redis_client, key_prefix, clock):
    gate = make_gate(redis_client, key_prefix, clock, windows={"github": {10: 5.0}})
    bound = gate.bind(GH, PROFILE, ME)
    probe = gate.take(bound)
    gate.answer(bound, probe, told(10, 7, T0 + 5), ok=True)  # two calls of another app first
    assert "oend" not in gate.state(bound)["5000-3600-all"]


def test_a_late_report_of_the_window_before_changes_nothing(redis_client, key_prefix, clock):
    gate = make_gate(redis_client, key_prefix, clock, skew_s=1.0, windows={"github": {10: 5.0}})
    bound = gate.bind(GH, PROFILE, ME)
    probe = gate.take(bound)
    gate.answer(bound, probe, told(10, 9, T0 + 6), ok=True)
    slow = take_all(gate, bound)  # 9 calls, answered long after (beyond max_margin)
    clock.now = T0 + 5.01  # the window our probe opened has ended (not yet T0 + 6 + skew)
    fresh = take_all(gate, bound)
    assert len(fresh) == 10
    before = gate.state(bound)["5000-3600-all"]
    gate.answer(bound, slow[0], told(10, 0, T0 + 6))  # the old window's, answered late
    after = gate.state(bound)["5000-3600-all"]
    assert after["prev"] == T0 + 6 and after["reset"] == before["reset"] != T0 + 6
    assert not gate.take(bound).granted


# -- a provider that does not announce on this route: no endless probing --------------------
def test_a_probe_answered_without_an_announcement_quiets_the_rule(gate, bound, clock):
    probe = gate.take(bound)
    gate.answer(bound, probe, AnswerReport(), ok=True)
    grants = take_all(gate, bound, most=50)
    assert len(grants) == 50 and not any(g.probe for g in grants)  # the prior governs


def test_an_error_or_a_garbled_header_is_no_proof_of_silence(gate, bound, clock):
    probe = gate.take(bound)
    gate.answer(bound, probe, AnswerReport(), ok=False)  # a 502 from a proxy
    again = gate.take(bound)
    assert again.granted and again.probe
    gate.answer(bound, again, AnswerReport(malformed=("x-ratelimit-reset",)), ok=True)
    assert gate.take(bound).probe


KNOWN_WINDOW_PLANS = st.lists(
    st.tuples(
        st.one_of(st.just(0.0), st.floats(0, 0.5), st.floats(0, 6)),
        st.one_of(st.just(0.0), st.just(2.0), st.floats(0, 2.0)),
    ),
    min_size=30,
    max_size=200,
)


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=KNOWN_WINDOW_PLANS, limit=st.integers(1, 12), window=st.sampled_from([1.0, 3.0, 5.0]))
def test_no_sequence_of_grants_passes_a_limit_whose_window_is_known(
    redis_client, key_prefix, plan, limit, window
):
    """As the test above, with the window known (configured): windows our calls open end
    on our clock, one window after the opening answer, and still nothing is refused."""
    clock = ManualClock(T0 + 0.37)
    gate = make_gate(
        redis_client,
        f"{key_prefix}:k:{limit}:{window}:{len(plan)}",
        clock,
        skew_s=1.0,
        windows={"github": {limit: window}},
    )
    bound = gate.bind(GH, PROFILE, ME)
    redis_client.delete(bound.redis_key)
    provider = FixedWindows([(limit, window, False, False)])
    granted = run_calls(gate, bound, provider, plan, clock)
    assert provider.rejected == 0
    assert granted >= 1
    event(f"a window ended on our clock: {'oend' in gate.state(bound)['5000-3600-all']}")
