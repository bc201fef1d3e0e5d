"""The provider's announced limit governs, with real processes (issue 17).

One stack (embedded Redis, the simulator, the web app, 2 prefork workers × 2
processes, the scheduler) whose simulator enforces limits netsync is not told
about: netsync keeps its real defaults (GitHub 5,000 an hour, Mastodon's
documented rules), and learns the real ones from the headers. Judged by the
simulator's own records (its 429s, its call log), never by how fast it went:

- GitHub, 10 calls per 5 s per token, announced only in ``x-ratelimit-*``: a
  whale on four worker slots gets no 429 and the exact network;
- Mastodon's paging throttle (``applies_to: paging``), 20 per 5 s, announced
  only in ``X-RateLimit-*`` as "the one you are closest to exceeding": no 429;
- rate-limit headers that do not parse (a relay garbles every other answer's):
  ignored for that answer, counted in ``/metrics``, never a failure.
"""

from __future__ import annotations

import pytest
import requests

from devtools.devstack import DevStack, WorkerSpec
from tests.integration.conftest import TEST_ENV, Stack, new_user, stack_options
from tests.integration.header_relay import HeaderRelay
from tests.integration.test_observability import scrape, total

WORKERS = [
    WorkerSpec("normal,whale,trickle", pool="prefork", concurrency=2, name=f"a{i}")
    for i in range(2)
]
GITHUB_LIMIT, GITHUB_WINDOW_S = 10, 5.0
PAGING_LIMIT, PAGING_WINDOW_S = 20, 5.0
#: what the relay puts in place of Bluesky's rate-limit headers on every other answer
GARBLED = {"ratelimit-remaining": "lots", "ratelimit-reset": "soon"}

SCENARIO = {
    "rate_limits": {
        "github": [{"limit": GITHUB_LIMIT, "window_s": GITHUB_WINDOW_S, "scope": "token"}],
        # only the paging throttle (aligned, as Mastodon's): every other call is free
        "mastodon": [
            {
                "limit": PAGING_LIMIT,
                "window_s": PAGING_WINDOW_S,
                "scope": "user",
                "applies_to": "paging",
            }
        ],
    }
}


@pytest.fixture(scope="module")
def relay():
    found = HeaderRelay("/bluesky", GARBLED, every=2)
    yield found
    found.close()


@pytest.fixture(scope="module")
def announced_stack(tmp_path_factory, relay):
    # the relay stands where the Bluesky account's PDS is: the login names it (a loopback
    # address the stack allows), else netsync would find the PDS from the DID document
    env = {
        **TEST_ENV,
        "WHALE_THRESHOLD": "1000",
        "BLUESKY_API_URL": relay.url,
        "OUTBOUND_ALLOW_PRIVATE": relay.url.removeprefix("http://").split("/")[0],
    }
    dev = DevStack(
        var_dir=tmp_path_factory.mktemp("announced"),
        workers=WORKERS,
        redis_db=11,
        scenario=SCENARIO,
        **stack_options(env),
    )
    dev.start()
    relay.upstream_origin = dev.simulator_url
    try:
        yield Stack(dev)
    finally:
        dev.stop()


def sync_to_the_end(stack: Stack, account: dict, timeout: float = 240) -> tuple[str, dict]:
    user = new_user()
    response = stack.login(user, account)
    assert response.status_code == 202, response.text
    record = stack.wait_final(response.json()["syncs"][0]["sync_id"], timeout=timeout)
    return user, record


def assert_exact_network(stack: Stack, user: str, account: dict, record: dict) -> None:
    assert record["status"] == "succeeded", record
    ids = stack.network_ids(user, account["provider"])
    assert len(ids) == len(set(ids)) == account["size"]
    assert set(ids) == stack.truth(account["provider"], account["id"])


def calls(stack: Stack, provider: str, token: str) -> list[dict]:
    response = requests.get(
        f"{stack.sim}/_sim/calls", params={"provider": provider, "token": token}, timeout=30
    )
    response.raise_for_status()
    return response.json()["calls"]


def rule_stats(stack: Stack, provider: str) -> dict:
    (rule,) = [r for r in stack.stats()["rate_limits"] if r["provider"] == provider]
    return rule


def test_github_limit_announced_only_in_headers_gets_no_429(announced_stack):
    """netsync is configured with GitHub's real 5,000 an hour; the account's token is
    allowed 10 per 5 s, which only the headers say. Without the announced gate the
    whale's 40-page fan-out would meet a 429 on its eleventh call."""
    stack = announced_stack
    account = stack.add_account("github", 4_000)  # the profile and 40 pages: five windows
    user, record = sync_to_the_end(stack, account)
    assert record["queue"] == "whale"
    assert_exact_network(stack, user, account, record)

    log = calls(stack, "github", account["token"])
    assert len(log) >= 41
    assert [c for c in log if c["rate_limited"] or c["status"] != 200] == []
    seen = rule_stats(stack, "github")["by_key"][account["token"]]
    assert seen["rejected"] == 0 and seen["peak"] <= GITHUB_LIMIT
    # the sync's cost: every call sent counted against the quota, nothing billed
    assert record["cost"] == {
        "calls": len(log),
        "counted_calls": len(log),
        "not_modified": 0,
        "resources": 0,
        "usd": 0.0,
    }
    print(
        f"github 10/5 s announced only: {len(log)} calls in {log[-1]['t'] - log[0]['t']:.1f} s "
        f"(the limit's bound: {(len(log) - GITHUB_LIMIT) / GITHUB_LIMIT * GITHUB_WINDOW_S:.0f} s)"
    )


def test_mastodon_paging_throttle_announced_only_in_headers_gets_no_429(announced_stack):
    """One account's followers and following synced at once: two chains of 60 pages on
    rel="next" (59 paging calls each, ``max_id``) share the user's paging throttle of 20
    per 5 s, which netsync knows as 300 per 15 min and the headers announce as the rule
    closest to being exceeded. Two chains put two calls in flight as a window runs out:
    a gate that only believes a low ``remaining`` once an answer says it sends one too many."""
    stack = announced_stack
    account = stack.add_account("mastodon", 80 * 60, relations=["followers", "following"])
    user = new_user()
    response = stack.login(user, account)
    assert response.status_code == 202, response.text
    records = [stack.wait_final(s["sync_id"], timeout=240) for s in response.json()["syncs"]]
    for record in records:
        assert record["status"] == "succeeded", record
        relation = record["relation"]
        ids = network_of(stack, user, "mastodon", relation)
        assert len(ids) == len(set(ids)) == account["size"]
        assert set(ids) == set(stack.truth_list("mastodon", account["id"], relation))

    log = calls(stack, "mastodon", account["token"])
    assert len([c for c in log if c["kind"] == "page"]) >= 120
    assert [c for c in log if c["rate_limited"] or c["status"] != 200] == []
    rule = rule_stats(stack, "mastodon")
    assert rule["applies_to"] == "paging" and rule["rejected"] == 0
    assert sum(r["cost"]["calls"] for r in records) == len(log)


def network_of(stack: Stack, user: str, provider: str, relation: str) -> list[str]:
    ids, cursor = [], None
    while True:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = stack.http.get(
            f"{stack.web}/v1/users/{user}/networks/{provider}/{relation}", params=params, timeout=30
        ).json()
        ids += [c["id"] for c in page["connections"]]
        cursor = page.get("next_cursor")
        if not cursor:
            return ids


def test_rate_limit_headers_that_do_not_parse_are_ignored_and_counted(announced_stack, relay):
    """Every other Bluesky answer reaches netsync with ``ratelimit-remaining: lots`` and
    ``ratelimit-reset: soon``: the sync ends with the exact network, each garbled
    header is counted once per answer in ``/metrics``."""
    stack = announced_stack
    before = scrape(stack)
    account = stack.add_account("bluesky", 1_000)  # the profile and 10 pages
    user, record = sync_to_the_end(stack, {**account, "instance_url": relay.url})
    assert_exact_network(stack, user, account, record)
    assert relay.garbled >= 5, relay.answers
    after = scrape(stack)
    for header in GARBLED:
        name, labels = "netsync_rate_headers_unreadable_total", {"provider": "bluesky"}
        counted = total(after, name, header=header, **labels) - total(
            before, name, header=header, **labels
        )
        assert counted == relay.garbled, (header, counted, relay.garbled)
