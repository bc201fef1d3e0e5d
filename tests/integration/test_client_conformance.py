"""The providers' own client libraries read the simulator as they read the real APIs.

PyGithub, tweepy 4, Mastodon.py and facebook-sdk (``requirements-clients.txt``,
installed by ``make clients`` into ``.venv-clients``: tweepy needs an oauthlib
below the service's pin) run in that virtualenv, one subprocess per batch of
operations (``clients/*_client.py``), against ``python -m simulator`` started as
a real process. For each library:

- paging: accounts around its page size (0, 1, n-1, n, n+1, 2n+3, and another
  relation or auth scheme) come back with exactly the ids of ``/_sim/truth``,
  in order, through the library's own pagination;
- errors: 401/404/unknown path/429 raise the library's own exception class for
  them, with the codes the library exposes;
- rate limits: what the library reads from the headers (PyGithub
  ``rate_limiting``, Mastodon.py ``ratelimit_*``, tweepy's 429 ``reset_time``)
  is what the simulator counts, and its waiting (PyGithub's GithubRetry,
  tweepy ``wait_on_rate_limit``, Mastodon.py ``ratelimit_method="wait"``) ends
  after the announced reset: the retried call is admitted, never rejected again.

A library that is not installed skips its tests and says why.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from simulator.providers import PROVIDER_SIMS
from simulator.testing import run_simulator_process

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = Path(__file__).resolve().parent / "clients"
CLIENTS_PYTHON = Path(
    os.environ.get("NETSYNC_CLIENTS_PYTHON", ROOT / ".venv-clients" / "bin" / "python")
)
#: provider -> (module to import, distribution in requirements-clients.txt)
LIBRARIES = {
    "github": ("github", "PyGithub"),
    "twitter": ("tweepy", "tweepy"),
    "mastodon": ("mastodon", "Mastodon.py"),
    "facebook": ("facebook", "facebook-sdk"),
}
#: the page size each library is asked for (the providers' defaults, as the simulator has them)
PAGE = {provider: PROVIDER_SIMS[provider].PAGE_SIZE for provider in LIBRARIES}
#: the most a page may hold (GitHub's per_page, Twitter's max_results), asked for explicitly
WIDEST = {provider: PROVIDER_SIMS[provider].MAX_PAGE_SIZE for provider in ("github", "twitter")}
CLIENT_TIMEOUT_S = 60


def boundary_sizes(n: int) -> list[int]:
    return [0, 1, n - 1, n, n + 1, 2 * n + 3]


def _account_id(provider: str, size: int) -> str:
    return {
        "github": f"conf-{size}",
        "twitter": str(7_000_000 + size),
        "mastodon": str(8_000_000 + size),
        "facebook": str(900_000 + size),
    }[provider]


#: (case id, provider, account, network op arguments, relation)
CASES = []
for _provider, _n in PAGE.items():
    for _size in boundary_sizes(_n):
        _account = {
            "provider": _provider,
            "id": _account_id(_provider, _size),
            "size": _size,
            "token": f"{_provider}-conf-{_size}",
        }
        CASES.append((f"{_provider}-{_size}", _provider, _account, {}, "followers"))
# the other relation, on disjoint networks of other sizes (GitHub, Twitter, Mastodon)
for _provider, _size, _following in (
    (p, PAGE[p] + 1, 2 * PAGE[p] + 1)
    for p in LIBRARIES
    if "following" in PROVIDER_SIMS[p].RELATIONS
):
    _account = {
        "provider": _provider,
        "id": _account_id(_provider, 10_000 + _size),
        "size": _size,
        "following_size": _following,
        "following_start": 5_000,
        "token": f"{_provider}-conf-following",
    }
    CASES.append(
        (
            f"{_provider}-following-{_following}",
            _provider,
            _account,
            {"relation": "following"},
            "following",
        )
    )
CASES += [
    (
        f"github-per_page-{WIDEST['github']}-{2 * WIDEST['github'] + 1}",
        "github",
        {
            "provider": "github",
            "id": "conf-wide",
            "size": 2 * WIDEST["github"] + 1,
            "token": "github-conf-wide",
        },
        {"per_page": WIDEST["github"]},
        "followers",
    ),
    (
        "twitter-oauth1-150",
        "twitter",
        {"provider": "twitter", "id": "7999999", "size": 150, "token": "twitter-conf-oauth1"},
        {"oauth1": True},
        "followers",
    ),
    (
        f"twitter-max_results-{WIDEST['twitter']}-{WIDEST['twitter'] + 1}",
        "twitter",
        {
            "provider": "twitter",
            "id": "7999998",
            "size": WIDEST["twitter"] + 1,
            "token": "twitter-conf-wide",
        },
        {"max_results": WIDEST["twitter"]},
        "followers",
    ),
]
#: accounts the error and rate-limit checks use (each token its own quota window)
EXTRA_ACCOUNTS = [
    {"provider": "github", "id": "conf-limits", "size": 3, "token": "gh-limit-1"},
    {"provider": "twitter", "id": "7100001", "size": 3, "token": "tw-limit-1"},
    {"provider": "mastodon", "id": "8100001", "size": 3, "token": "ma-limit-1"},
    {"provider": "facebook", "id": "910001", "size": 3, "token": "fb-limit-1"},
    {"provider": "facebook", "id": "910002", "size": 3, "token": "fb-other"},
]
# more tokens of the same accounts (a token per check: each opens its own window)
TOKENS = {
    "github": ["gh-limit-2", "gh-limit-403", "gh-limit-429", "gh-secondary"],
    "twitter": ["tw-limit-2", "tw-limit-3"],
    "mastodon": ["ma-limit-2", "ma-limit-3"],
}


def _scenario() -> dict:
    return {"accounts": [case[2] for case in CASES] + EXTRA_ACCOUNTS}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with run_simulator_process(
        _scenario(), directory=tmp_path_factory.mktemp("conformance")
    ) as running:
        # extra tokens for the limit checks: same accounts, tokens of their own
        accounts = {a["provider"]: a for a in EXTRA_ACCOUNTS}
        for provider, tokens in TOKENS.items():
            for i, token in enumerate(tokens):
                running.put_accounts(
                    {**accounts[provider], "id": f"{accounts[provider]['id']}{i}", "token": token}
                )
        yield running


_available: dict[str, str | None] = {}


def require(provider: str) -> None:
    """Skip (with the reason) when the provider's library is not in the clients' venv."""
    module, distribution = LIBRARIES[provider]
    if provider not in _available:
        if not CLIENTS_PYTHON.exists():
            _available[provider] = (
                f"{CLIENTS_PYTHON} not found: `make clients` installs "
                f"requirements-clients.txt into .venv-clients"
            )
        else:
            probe = subprocess.run(
                [str(CLIENTS_PYTHON), "-c", f"import {module}"],
                capture_output=True,
                text=True,
                timeout=CLIENT_TIMEOUT_S,
            )
            _available[provider] = (
                None
                if probe.returncode == 0
                else (
                    f"{distribution} is not importable in {CLIENTS_PYTHON} "
                    f"(`make clients`): {probe.stderr.strip().splitlines()[-1:]}"
                )
            )
    if _available[provider]:
        pytest.skip(_available[provider])


def run_client(sim, provider: str, *ops: dict) -> list[dict]:
    """Run ``ops`` with the provider's library (``clients/<provider>_client.py``)."""
    require(provider)
    done = subprocess.run(
        [str(CLIENTS_PYTHON), str(CLIENTS / f"{provider}_client.py")],
        input=json.dumps({"base": sim.base_url, "ops": list(ops)}),
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        cwd=CLIENTS,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)["results"]


def value(result: dict):
    assert "value" in result, result.get("raised")
    return result["value"]


def raised(result: dict) -> dict:
    assert "raised" in result, f"expected the library to raise, it returned {result.get('value')}"
    return result["raised"]


def calls_of(sim, token: str) -> list[dict]:
    return sim.calls(token=token)


# --- paging: exactly the truth, through the library's own pagination ----------------------

_paged: dict[str, dict] = {}


def paged(sim, provider: str) -> dict:
    """All of a provider's paging cases in one client run (results by case id, and the
    simulator's quota counters right after)."""
    if provider not in _paged:
        cases = [c for c in CASES if c[1] == provider]
        key = {"github": "login"}.get(provider, "id")
        ops = [
            {"op": "network", "token": account["token"], key: account["id"], **args}
            for _, _, account, args, _ in cases
        ]
        results = run_client(sim, provider, *ops)
        rules = [r for r in sim.stats()["rate_limits"] if r["provider"] == provider]
        _paged[provider] = {"results": {c[0]: r for c, r in zip(cases, results)}, "rules": rules}
    return _paged[provider]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_library_pages_exactly_the_truth(sim, case):
    case_id, provider, account, _, relation = case
    got = value(paged(sim, provider)["results"][case_id])
    truth = sim.truth(provider, account["id"], relation if relation != "followers" else None)
    assert truth["count"] == (
        account.get("following_size") if relation == "following" else account["size"]
    )
    assert got["ids"] == truth["ids"]  # same ids, same order, no duplicates


def test_pygithub_follows_the_urls_the_simulator_gave_and_reads_its_rate_headers(sim):
    """``user.get_followers()`` pages from the body's ``url``: it works only because
    that URL names the simulator (GitHub Enterprise style), not api.github.com."""
    run = paged(sim, "github")
    # no scenario rule: GitHub's real ones, 5,000 an hour per user (60 without a token)
    (rule,) = [r for r in run["rules"] if r["scope"] == "user"]
    assert rule["implicit"] and rule["limit"] == 5000
    for case_id, provider, account, _, _ in CASES:
        if provider != "github":
            continue
        got = value(run["results"][case_id])
        assert got["url"] == f"{sim.base_url}/github/users/{account['id']}"
        assert got["followers_url"] == got["url"] + "/followers"
        seen = rule["by_key"][f"user:{account['id']}"]
        # the last answer's headers, as PyGithub parsed them, are the simulator's count
        assert got["rate_limiting"] == [5000 - seen["used"], 5000]
        assert got["resettime"] == seen["reset"]


def test_mastodon_py_reads_the_iso_reset_and_remaining(sim):
    run = paged(sim, "mastodon")
    # Mastodon's real throttles; the per-token one (300 / 5 min) is the one each case's
    # calls come closest to exceeding (its paging calls are one fewer), so it speaks
    (rule,) = [r for r in run["rules"] if r["scope"] == "token"]
    assert rule["implicit"] and rule["align"]
    for case_id, provider, account, _, _ in CASES:
        if provider != "mastodon":
            continue
        got = value(run["results"][case_id])
        seen = rule["by_key"][account["token"]]
        assert (got["limit"], got["remaining"]) == (rule["limit"], rule["limit"] - seen["used"])
        # ISO-8601 read as the epoch it names; Mastodon.py then adds its clock's lead
        # over the Date header (whole seconds): never earlier, never hours off
        assert seen["reset"] <= got["reset"] < seen["reset"] + 60


def test_tweepy_sees_the_rate_headers_of_the_default_rule(sim):
    results = run_client(
        sim,
        "twitter",
        {"op": "headers", "token": "twitter-conf-1", "id": _account_id("twitter", 1)},
    )
    headers = {k.lower(): v for k, v in value(results[0]).items()}
    # X's real limit for GET /2/users/:id: 900 / 15 min per user, counted per endpoint
    (rule,) = [
        r
        for r in sim.stats()["rate_limits"]
        if r["provider"] == "twitter" and r["endpoint"] == "/2/users/:id"
    ]
    seen = rule["by_key"][f"user:{_account_id('twitter', 1)} /2/users/:id"]
    assert headers == {
        "x-rate-limit-limit": "900",
        "x-rate-limit-remaining": str(900 - seen["used"]),
        "x-rate-limit-reset": str(seen["reset"]),
    }


# --- errors and limits: the library's own exception for each -------------------------------


@pytest.fixture
def faults(sim):
    """Install faults for one test; they (and the rules they replace) go afterwards."""
    yield sim.set_faults
    sim.clear_faults()


def test_pygithub_errors_and_rate_limits(sim, faults):
    faults(
        {
            "kind": "rate_limit",
            "provider": "github",
            "limit": 1,
            "window_s": 2,
            "status": 403,
            "auth": "token",  # calls without a valid token are not this rule's
        },
        {
            "kind": "error",
            "provider": "github",
            "token": "gh-limit-429",
            "name": "primary_rate_limit_429",
            "reset_in_s": 30,
        },
        {
            "kind": "error",
            "provider": "github",
            "token": "gh-secondary",
            "name": "secondary_rate_limit",
            "retry_after": 1,
            "times": 1,
        },
    )
    login = "conf-limits"
    bad, ghost, anonymous, unknown, limited, waited, status429, secondary = run_client(
        sim,
        "github",
        {"op": "profile", "login": login, "token": "nope"},
        {"op": "profile", "login": "ghost-account", "token": "gh-limit-1"},
        {"op": "me"},
        {"op": "raw_get", "path": "/nope", "token": "gh-limit-1"},
        {"op": "profile", "login": login, "token": "gh-limit-1", "calls": 2},
        {"op": "profile", "login": login, "token": "gh-limit-2", "calls": 2, "retry": True},
        {"op": "profile", "login": login, "token": "gh-limit-429"},
        {"op": "profile", "login": login, "token": "gh-secondary", "retry": True},
    )
    assert raised(bad)["class"] == "BadCredentialsException" and raised(bad)["status"] == 401
    assert raised(ghost)["class"] == "UnknownObjectException" and raised(ghost)["status"] == 404
    # "Requires authentication": PyGithub keeps BadCredentialsException for "Bad credentials"
    assert raised(anonymous)["class"] == "GithubException" and raised(anonymous)["status"] == 401
    assert raised(unknown)["class"] == "UnknownObjectException" and raised(unknown)["status"] == 404
    # the second call of a 1-per-window token: PyGithub's rate-limit exception, headers intact
    error = raised(limited)
    assert error["class"] == "RateLimitExceededException" and error["status"] == 403
    assert (
        error["headers"]["x-ratelimit-remaining"] == "0"
        and error["headers"]["x-ratelimit-limit"] == "1"
    )
    # PyGithub names only a 403 a rate limit: a 429 (GitHub sends both) is a plain GithubException
    assert raised(status429)["class"] == "GithubException" and raised(status429)["status"] == 429
    assert raised(status429)["message"].startswith("API rate limit exceeded")
    # GithubRetry waited for X-RateLimit-Reset: the retried call was admitted, and
    # PyGithub's own figures are the new window's
    got = value(waited)
    assert [c["status"] for c in calls_of(sim, "gh-limit-2")] == [200, 403, 200]
    assert got["rate_limiting"] == [0, 1]
    # a secondary limit's Retry-After (1 s here) is honoured the same way
    assert value(secondary)["login"] == login
    assert [c["status"] for c in calls_of(sim, "gh-secondary")] == [403, 200]


def test_tweepy_errors_and_rate_limits(sim, faults):
    faults(
        {"kind": "rate_limit", "provider": "twitter", "limit": 1, "window_s": 2, "auth": "token"}
    )
    account = "7100001"
    bad, bad_oauth1, unknown_path, ghost, limited, waited = run_client(
        sim,
        "twitter",
        {"op": "user", "token": "nope", "id": account},
        {"op": "user", "token": "nope", "id": account, "oauth1": True},
        {"op": "raw_get", "token": "tw-limit-1", "path": "/2/nope"},
        {"op": "user", "token": "tw-limit-3", "id": "999"},
        {"op": "user", "token": "tw-limit-1", "id": account, "calls": 2},
        {
            "op": "user",
            "token": "tw-limit-2",
            "id": account,
            "calls": 2,
            "wait_on_rate_limit": True,
        },
    )
    assert raised(bad)["class"] == "Unauthorized" and raised(bad)["status"] == 401
    assert raised(bad_oauth1)["class"] == "Unauthorized" and raised(bad_oauth1)["api_codes"] == [32]
    assert raised(unknown_path)["class"] == "NotFound" and raised(unknown_path)["api_codes"] == [34]
    # an unknown user is no exception: a 200 whose errors[] tweepy hands back
    assert value(ghost)["data"] is None
    assert value(ghost)["errors"][0]["title"] == "Not Found Error"
    error = raised(limited)
    assert error["class"] == "TooManyRequests" and error["status"] == 429
    assert error["reset_time"] == int(error["headers"]["x-rate-limit-reset"])
    assert "HTTPException" in error["bases"]
    # wait_on_rate_limit slept until x-rate-limit-reset: the retry was admitted
    assert value(waited)["data"]["id"] == account
    assert [c["status"] for c in calls_of(sim, "tw-limit-2")] == [200, 429, 200]


def test_mastodon_py_errors_and_rate_limits(sim, faults):
    faults(
        {"kind": "rate_limit", "provider": "mastodon", "limit": 1, "window_s": 2, "align": False}
    )
    account = "8100001"
    bad, ghost, unknown_path, limited, waited = run_client(
        sim,
        "mastodon",
        {"op": "me", "token": "nope"},
        {"op": "account", "id": "999", "token": "ma-limit-3"},
        {"op": "instance", "token": "ma-limit-3"},
        {"op": "account", "id": account, "token": "ma-limit-1", "calls": 2},
        {
            "op": "account",
            "id": account,
            "token": "ma-limit-2",
            "calls": 2,
            "ratelimit_method": "wait",
        },
    )
    assert raised(bad)["class"] == "MastodonUnauthorizedError" and 401 in raised(bad)["args"]
    assert (
        raised(ghost)["class"] == "MastodonNotFoundError"
        and "Record not found" in raised(ghost)["args"]
    )
    assert (
        raised(unknown_path)["class"] == "MastodonNotFoundError"
        and "Not Found" in raised(unknown_path)["args"]
    )
    assert raised(limited)["class"] == "MastodonRatelimitError"
    # "wait": slept until the ISO reset of the 429, then the retry was admitted
    got = value(waited)
    assert got["id"] == account and (got["limit"], got["remaining"]) == (1, 0)
    assert [c["status"] for c in calls_of(sim, "ma-limit-2")] == [200, 429, 200]


def test_facebook_sdk_errors_and_rate_limits(sim, faults):
    faults(
        {
            "kind": "rate_limit",
            "provider": "facebook",
            "limit": 1,
            "window_s": 3600,
            "scope": "token",
            "auth": "token",  # calls without a valid token are not this rule's
        }
    )
    bad, missing, other, unknown_path, limited = run_client(
        sim,
        "facebook",
        {"op": "friends_page", "id": "910001", "token": "nope"},
        {"op": "friends_page", "id": "910001"},
        {"op": "friends_page", "id": "910002", "token": "fb-limit-1"},
        {"op": "raw", "path": "v3.1/910001/friends/extra", "token": "fb-limit-1"},
        {"op": "friends_page", "id": "910001", "token": "fb-limit-1", "calls": 2},
    )
    for result in (bad, missing, other, unknown_path, limited):
        assert raised(result)["class"] == "GraphAPIError"  # facebook-sdk has no other
        assert raised(result)["type"] == (
            "GraphMethodException" if result is other else "OAuthException"
        )
    assert raised(bad)["code"] == 190
    assert raised(missing)["code"] == 104  # "An access token is required to request this resource."
    assert (raised(other)["code"], raised(other)["subcode"]) == (100, 33)
    assert raised(unknown_path)["code"] == 2500
    assert raised(limited)["code"] == 17 and raised(limited)["is_transient"] is True
