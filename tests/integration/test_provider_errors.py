"""Every error row of PROVIDERS.md, injected mid-sync by the simulator, against real workers.

Each row syncs a small account once (the "previous network"), adds a fault
that answers with that row on the 3rd call of a forced re-sync (the 2nd
page; ``from_call`` where the row must persist), and checks what the
taxonomy promises:

- REAUTH: ``needs_reauth`` with the row's kind, no later call with that token
  (the token is revoked in the simulator), previous network intact;
- REFRESH: one call to the token endpoint, then ``succeeded``; when the new
  token is refused too, still one refresh and then ``needs_reauth``;
- WAIT: no call before the provider's reset, then ``succeeded``; where the
  reset is an hour or a day away (Facebook, LinkedIn, GitHub without
  retry-after), the task is parked due at that time and makes no call
  meanwhile, and is then expedited (see ``provider_helpers``);
- BACKOFF: at least MAX_BACKOFF_ATTEMPTS calls of the fault and at most what the
  provider's circuit breaker lets through in the retry budget, ``failed``,
  previous network intact;
- SKIP: the page ends its chain empty: ``partial`` with the row's kind;
- FAIL: ``failed`` at once, no further call, previous network intact;
- RESTART (Facebook code 100): pagination restarted once, then ``failed``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest
import requests

import providers
from providers.linkedin import next_utc_midnight
from providers.provider import Auth
from tests.integration.provider_helpers import (
    calls,
    expedite,
    forget_quota,
    sync_new_account,
    token_calls,
    wait_parked,
)

MAX_BACKOFF_ATTEMPTS = 3  # conftest.TEST_ENV
#: what the breaker lets through while a fault lasts the whole retry budget (TEST_ENV:
#: budget 2 s, cooldown 0.5 s; default threshold 5; the stack's 4 worker slots in flight)
BREAKER_BOUND = 5 + 4 + int(2 / 0.5) + 1
SIZE = {
    "twitter": 2500,
    "facebook": 12000,
    "linkedin": 120,
    "mastodon": 200,
    "github": 250,
    "bluesky": 250,
}
#: providers that launch pages at once: a fault may meet pages already in flight
FAN_OUT = {"linkedin", "github"}
#: providers whose tokens netsync can renew (an OAuth2 refresh endpoint, or a session)
REFRESHABLE = {
    name
    for name, cls in providers.provider_classes().items()
    if cls.TOKEN_URL is not None or cls.AUTH is Auth.SESSION
}


@dataclass
class Row:
    provider: str
    id: str
    action: str
    kind: str
    #: the fault's row selector (name / code / subcode) and its parameters
    fault: dict = field(default_factory=dict)
    #: how long the provider asks us to wait (WAIT rows), seconds; None: wait real time
    parked_for: float | None = None
    credential: dict = field(default_factory=dict)
    #: REAUTH rows revoke the token; "error" answers the row from the 3rd call on instead
    reauth_fault: str = "revoke_token"


ROWS = [
    # -- Twitter -------------------------------------------------------------------------
    Row(
        "twitter", "429/88 v1", "WAIT", "rate_limited", {"code": 88, "shape": "v1", "reset_in_s": 2}
    ),
    Row(
        "twitter",
        "429 problem",
        "WAIT",
        "rate_limited",
        {"code": 88, "shape": "v2", "reset_in_s": 2},
    ),
    Row("twitter", "401/32", "REAUTH", "could_not_authenticate", {"code": 32}),
    Row("twitter", "401/89 oauth2", "REFRESH", "invalid_or_expired_token", {"code": 89}),
    Row(
        "twitter",
        "401/89 oauth1",
        "REAUTH",
        "invalid_or_expired_token",
        {"code": 89},
        credential={"token_secret": "tw-secret"},
    ),
    Row("twitter", "403/326", "REAUTH", "account_locked", {"code": 326}),
    Row("twitter", "403/63", "SKIP", "user_suspended", {"code": 63}),
    Row("twitter", "400/215", "FAIL", "bad_authentication_data", {"code": 215}),
    Row("twitter", "503/130", "BACKOFF", "over_capacity", {"code": 130}),
    Row("twitter", "500/131", "BACKOFF", "internal_error", {"code": 131}),
    Row("twitter", "200 resource-not-found", "SKIP", "not_found", {"name": "resource_not_found"}),
    # -- Facebook ------------------------------------------------------------------------
    Row("facebook", "1", "BACKOFF", "unknown_error", {"code": 1}),
    Row("facebook", "2", "BACKOFF", "service_unavailable", {"code": 2}),
    Row("facebook", "4", "WAIT", "app_rate_limit", {"code": 4}, parked_for=300),
    Row("facebook", "17", "WAIT", "user_rate_limit", {"code": 17}, parked_for=300),
    Row("facebook", "32", "WAIT", "page_rate_limit", {"code": 32}, parked_for=300),
    Row("facebook", "613", "WAIT", "custom_rate_limit", {"code": 613}, parked_for=300),
    Row("facebook", "341", "WAIT", "application_limit", {"code": 341}, parked_for=300),
    Row("facebook", "368", "WAIT", "policy_block", {"code": 368}, parked_for=3600),
    Row("facebook", "10", "REAUTH", "permission_denied", {"code": 10}),
    Row("facebook", "200", "REAUTH", "permission_denied", {"code": 200}),
    # 200-299 is a range: the simulator synthesizes the row, which its revocation
    # cannot replay later, so the row answers every call from the 3rd on instead.
    Row("facebook", "299", "REAUTH", "permission_denied", {"code": 299}, reauth_fault="error"),
    Row("facebook", "102", "REAUTH", "session_invalid", {"code": 102}),
    Row("facebook", "190", "REAUTH", "invalid_token", {"name": "invalid_token"}),
    Row("facebook", "190/458", "REAUTH", "app_not_installed", {"code": 190, "subcode": 458}),
    Row("facebook", "190/459", "REAUTH", "user_checkpointed", {"code": 190, "subcode": 459}),
    Row("facebook", "190/460", "REAUTH", "password_changed", {"code": 190, "subcode": 460}),
    Row("facebook", "190/463", "REAUTH", "token_expired", {"code": 190, "subcode": 463}),
    Row("facebook", "190/464", "REAUTH", "unconfirmed_user", {"code": 190, "subcode": 464}),
    Row("facebook", "190/467", "REAUTH", "invalid_access_token", {"code": 190, "subcode": 467}),
    Row("facebook", "190/493", "REAUTH", "inactive_user", {"code": 190, "subcode": 493}),
    # -- LinkedIn ------------------------------------------------------------------------
    Row("linkedin", "401/65600", "REFRESH", "invalid_access_token", {"code": 65600}),
    Row("linkedin", "401/65601", "REAUTH", "revoked_access_token", {"code": 65601}),
    Row(
        "linkedin",
        "401 expired",
        "REFRESH",
        "expired_access_token",
        {"name": "expired_access_token"},
    ),
    Row("linkedin", "403", "REAUTH", "access_denied", {"name": "access_denied"}),
    Row("linkedin", "404", "SKIP", "not_found", {"name": "not_found"}),
    Row("linkedin", "429/101", "WAIT", "throttled", {"code": 101}, parked_for=-1),  # midnight UTC
    Row("linkedin", "500", "BACKOFF", "server_error", {"name": "server_error"}),
    Row("linkedin", "504", "BACKOFF", "gateway_timeout", {"name": "gateway_timeout"}),
    # -- Mastodon ------------------------------------------------------------------------
    Row("mastodon", "401", "REAUTH", "invalid_token", {"name": "unauthorized"}),
    Row("mastodon", "403", "REAUTH", "forbidden", {"name": "forbidden"}),
    Row("mastodon", "404", "SKIP", "not_found", {"name": "not_found"}),
    Row("mastodon", "410", "SKIP", "gone", {"name": "gone"}),
    Row("mastodon", "429", "WAIT", "rate_limited", {"name": "rate_limited", "reset_in_s": 2}),
    Row("mastodon", "503", "BACKOFF", "unavailable", {"name": "unavailable"}),
    # -- GitHub --------------------------------------------------------------------------
    Row(
        "github",
        "403 primary",
        "WAIT",
        "rate_limited",
        {"name": "primary_rate_limit", "reset_in_s": 2},
    ),
    Row(
        "github",
        "429 primary",
        "WAIT",
        "rate_limited",
        {"name": "primary_rate_limit_429", "reset_in_s": 2},
    ),
    Row(
        "github",
        "403 secondary retry-after",
        "WAIT",
        "secondary_rate_limit",
        {"name": "secondary_rate_limit", "retry_after": 2},
    ),
    Row(
        "github",
        "403 secondary",
        "WAIT",
        "secondary_rate_limit",
        {"name": "secondary_rate_limit_no_retry_after"},
        parked_for=60,
    ),
    Row("github", "401", "REAUTH", "bad_credentials", {"name": "bad_credentials"}),
    Row("github", "404", "SKIP", "not_found", {"name": "not_found"}),
    Row("github", "500", "BACKOFF", "server_error", {"name": "server_error"}),
    Row("github", "503", "BACKOFF", "unavailable", {"name": "unavailable"}),
    # -- Bluesky -------------------------------------------------------------------------
    Row("bluesky", "400 ExpiredToken", "REFRESH", "expired_token", {"name": "expired_token"}),
    Row(
        "bluesky", "401 AccountTakedown", "REAUTH", "account_takedown", {"name": "account_takedown"}
    ),
    Row("bluesky", "400 actor suspended", "SKIP", "actor_suspended", {"name": "actor_suspended"}),
    Row("bluesky", "400 InvalidRequest", "FAIL", "invalid_request", {"name": "invalid_request"}),
    Row("bluesky", "429", "WAIT", "rate_limited", {"name": "rate_limited", "reset_in_s": 2}),
    Row(
        "bluesky",
        "502 UpstreamFailure",
        "BACKOFF",
        "upstream_failure",
        {"name": "upstream_failure"},
    ),
    Row("bluesky", "502 html", "BACKOFF", "bad_gateway", {"name": "gateway_html"}),
]


def add_fault(stack, fault: dict) -> str:
    response = requests.post(f"{stack.sim}/_sim/faults", json={"add": [fault]}, timeout=10)
    response.raise_for_status()
    return response.json()["faults"][-1]["id"]


def prepare(stack, row: Row):
    """A synced account (the previous network) and its user; the fault is added by the caller."""
    extra = dict(row.credential)
    if row.provider in REFRESHABLE and "token_secret" not in extra:
        extra["refresh_token"] = f"rt-{row.provider}-{time.time_ns()}"
    user, account, first = sync_new_account(stack, row.provider, SIZE[row.provider], **extra)
    assert first["status"] == "succeeded", first
    return user, account, set(stack.network_ids(user, row.provider))


def resync(stack, user, provider):
    """A re-sync that pages the whole network (``auto`` would read a head of one or two
    calls, and the faults here strike the third call)."""
    forget_quota(stack, provider)
    return stack.resync(user, provider, force=True, mode="full")["sync_id"]


def later_calls(stack, provider, token, after_seq):
    return [c for c in calls(stack, provider, token=token) if c["seq"] > after_seq]


def fault_calls(stack, provider, fault_id):
    return [c for c in calls(stack, provider) if c.get("fault") == fault_id]


@pytest.mark.parametrize("row", [pytest.param(r, id=f"{r.provider}:{r.id}") for r in ROWS])
def test_error_row_mid_sync(stack, row):
    user, account, previous = prepare(stack, row)
    provider, token = row.provider, account["token"]
    selector = {"provider": provider, **row.fault}
    if row.action == "REAUTH" and row.reauth_fault == "revoke_token":
        # The token is revoked at the 3rd call: every later call with it gets this row.
        fault = add_fault(stack, {"kind": "revoke_token", "token": token, "at_call": 3, **selector})
    elif row.action == "REAUTH":
        fault = add_fault(stack, {"kind": "error", "token": token, "from_call": 3, **selector})
    elif row.action == "BACKOFF":
        fault = add_fault(
            stack, {"kind": "error", "account": account["id"], "from_call": 3, **selector}
        )
    else:
        fault = add_fault(
            stack, {"kind": "error", "account": account["id"], "at_call": 3, **selector}
        )
    check = CHECKS[row.action]
    check(stack, row, user, account, previous, fault, resync(stack, user, provider))


def check_reauth(stack, row, user, account, previous, fault, sync_id):
    before = token_calls(stack).get(row.provider, 0)
    record = stack.wait_final(sync_id, timeout=60)
    assert record["status"] == "needs_reauth", record
    assert record["error"]["kind"] == row.kind
    refused = [c for c in calls(stack, row.provider, token=account["token"]) if c["status"] >= 400]
    assert refused, "the revoked token was refused at least once"
    after = later_calls(stack, row.provider, account["token"], refused[0]["seq"])
    assert len(after) <= in_flight(row.provider), after  # nothing new is sent with a refused token
    assert token_calls(stack).get(row.provider, 0) == before  # nothing to refresh (OAuth 1.0a too)
    assert set(stack.network_ids(user, row.provider)) == previous


def check_refresh(stack, row, user, account, previous, fault, sync_id):
    before = token_calls(stack).get(row.provider, 0)
    record = stack.wait_final(sync_id, timeout=60)
    assert record["status"] == "succeeded", record
    assert token_calls(stack)[row.provider] - before == 1  # exactly one refresh
    (hit,) = fault_calls(stack, row.provider, fault)
    stale = later_calls(stack, row.provider, account["token"], hit["seq"])
    assert len(stale) <= in_flight(row.provider), stale  # the refused token is not used again
    assert set(stack.network_ids(user, row.provider)) == stack.truth(row.provider, account["id"])


def in_flight(provider) -> int:
    """Sibling pages that may already be calling when one page of a fan-out meets an error."""
    if provider not in FAN_OUT:
        return 0
    return -(-SIZE[provider] // providers.provider_class(provider).PAGE_SIZE) - 1


def assert_no_call_until(stack, row, account, hit, until: float):
    """No call with the token between the fault and ``until``, bar siblings already underway."""
    early = [
        c for c in later_calls(stack, row.provider, account["token"], hit["seq"]) if c["t"] < until
    ]
    assert len(early) <= in_flight(row.provider), early
    assert all(c["t"] < hit["t"] + 0.5 for c in early), early


def check_wait(stack, row, user, account, previous, fault, sync_id):
    if row.parked_for is None:  # a reset seconds away: wait for real
        record = stack.wait_final(sync_id, timeout=60)
        (hit,) = fault_calls(stack, row.provider, fault)
        wait_s = row.fault.get("reset_in_s") or row.fault.get("retry_after")
        until = hit["t"] + wait_s - 0.01
        assert_no_call_until(stack, row, account, hit, until)
        assert any(
            c["t"] >= until for c in later_calls(stack, row.provider, account["token"], hit["seq"])
        )
    else:  # an hour or a day away: parked due then, no call meanwhile, then expedited
        entries = wait_parked(stack, sync_id)
        (hit,) = fault_calls(stack, row.provider, fault)
        expected = (
            (next_utc_midnight(time.time()) - time.time()) if row.parked_for < 0 else row.parked_for
        )
        (entry,) = [e for e in entries if e["reason"] == row.kind]
        assert entry["due_at"] - entry["parked_at"] == pytest.approx(expected, abs=5)
        assert account["token"] not in str(entries)  # no credential in a parked message
        time.sleep(1.0)
        assert_no_call_until(stack, row, account, hit, time.time())
        assert stack.sync(sync_id)["status"] == "running"
        expedite(stack, sync_id, row.provider)
        record = stack.wait_final(sync_id, timeout=60)
    assert record["status"] == "succeeded", record
    assert set(stack.network_ids(user, row.provider)) == stack.truth(row.provider, account["id"])


def check_backoff(stack, row, user, account, previous, fault, sync_id):
    record = stack.wait_final(sync_id, timeout=60)
    assert record["status"] == "failed" and record["error"]["kind"] == row.kind, record
    hits = fault_calls(stack, row.provider, fault)
    # bounded per provider by its breaker, not per page (fanned out or one chain)
    assert MAX_BACKOFF_ATTEMPTS <= len(hits) <= BREAKER_BOUND
    assert set(stack.network_ids(user, row.provider)) == previous


def check_skip(stack, row, user, account, previous, fault, sync_id):
    record = stack.wait_final(sync_id, timeout=60)
    assert record["status"] == "partial" and record["partial_reason"] == row.kind, record
    network = set(stack.network_ids(user, row.provider))
    truth = stack.truth(row.provider, account["id"])
    assert network and network < truth  # what there is, and the status says it is not all


def check_fail(stack, row, user, account, previous, fault, sync_id):
    record = stack.wait_final(sync_id, timeout=60)
    assert record["status"] == "failed" and record["error"]["kind"] == row.kind, record
    (hit,) = fault_calls(stack, row.provider, fault)
    assert later_calls(stack, row.provider, account["token"], hit["seq"]) == []
    assert set(stack.network_ids(user, row.provider)) == previous


CHECKS = {
    "REAUTH": check_reauth,
    "REFRESH": check_refresh,
    "WAIT": check_wait,
    "BACKOFF": check_backoff,
    "SKIP": check_skip,
    "FAIL": check_fail,
}


# -- rows that need more than one fault or a special credential ------------------------------
@pytest.mark.parametrize(
    "provider,selector",
    [
        ("twitter", {"code": 89}),
        ("linkedin", {"code": 65600}),
        ("bluesky", {"name": "expired_token"}),
    ],
)
def test_refresh_then_refused_again_is_reauth_after_one_refresh(stack, provider, selector):
    """A 401 the table calls refreshable gets exactly one refresh, then REAUTH."""
    row = Row(provider, "", "REFRESH", "")
    user, account, previous = prepare(stack, row)
    add_fault(
        stack,
        {
            "kind": "error",
            "provider": provider,
            "account": account["id"],
            "path_kind": "page",
            **selector,
            "from_call": 2,
        },
    )
    before = token_calls(stack).get(provider, 0)
    record = stack.wait_final(resync(stack, user, provider), timeout=60)
    assert record["status"] == "needs_reauth", record
    assert token_calls(stack)[provider] - before == 1
    assert set(stack.network_ids(user, provider)) == previous


@pytest.mark.parametrize("provider", ["twitter", "linkedin", "bluesky"])
def test_expired_token_refreshes_once_then_succeeds(stack, provider):
    """The simulator expires the token mid-sync: its expired-token row, one refresh, success."""
    row = Row(provider, "", "REFRESH", "")
    user, account, previous = prepare(stack, row)
    add_fault(
        stack,
        {"kind": "expire_token", "provider": provider, "token": account["token"], "at_call": 3},
    )
    before = token_calls(stack).get(provider, 0)
    record = stack.wait_final(resync(stack, user, provider), timeout=60)
    assert record["status"] == "succeeded", record
    assert token_calls(stack)[provider] - before == 1
    assert set(stack.network_ids(user, provider)) == stack.truth(provider, account["id"])


def test_facebook_bad_token_family_is_reauth_whatever_the_message(stack):
    row = Row("facebook", "", "REAUTH", "")
    user, account, previous = prepare(stack, row)
    add_fault(
        stack,
        {
            "kind": "revoke_token",
            "provider": "facebook",
            "token": account["token"],
            "name": "bad_token",
            "at_call": 3,
        },
    )
    record = stack.wait_final(resync(stack, user, "facebook"), timeout=60)
    assert record["status"] == "needs_reauth", record
    assert set(stack.network_ids(user, "facebook")) == previous


def test_facebook_expired_cursor_restarts_pagination_once(stack):
    row = Row("facebook", "", "RESTART", "")
    user, account, previous = prepare(stack, row)
    add_fault(
        stack,
        {"kind": "cursor_expired", "provider": "facebook", "account": account["id"], "times": 1},
    )
    record = stack.wait_final(resync(stack, user, "facebook"), timeout=60)
    assert record["status"] == "succeeded", record
    assert set(stack.network_ids(user, "facebook")) == stack.truth("facebook", account["id"])


def test_facebook_cursor_expiring_again_after_the_restart_fails(stack):
    row = Row("facebook", "", "RESTART", "")
    user, account, previous = prepare(stack, row)
    seq = max(c["seq"] for c in calls(stack, "facebook", token=account["token"]))
    add_fault(stack, {"kind": "cursor_expired", "provider": "facebook", "account": account["id"]})
    record = stack.wait_final(resync(stack, user, "facebook"), timeout=60)
    assert record["status"] == "failed" and record["error"]["kind"] == "cursor_expired", record
    pages = [
        c for c in later_calls(stack, "facebook", account["token"], seq) if c["kind"] == "page"
    ]
    # first page, expired cursor, first page again (the one restart), expired again
    assert [c["status"] for c in pages] == [200, 400, 200, 400]
    assert set(stack.network_ids(user, "facebook")) == previous
