"""GitHub's conditional requests: ETags of the token and the content, free 304s.

The shape is held to a real recording (``tests/fixtures/real-push/github``):
a weak ``ETag`` on the 200, a 304 without a body that carries the same tag in
strong form, and the rate-limit figures of the 304 unchanged.
"""

import json
import re
from pathlib import Path

import pytest
import requests

from simulator.testing import FakeClock, run_simulator

RECORDED = json.loads(
    (
        Path(__file__).parents[1]
        / "fixtures/real-push/github/conditional_2023_get_repo_200_etag_then_304_rate_unchanged.json"
    ).read_text()
)
ACCOUNTS = [
    {"provider": "github", "id": "octocat", "size": 75, "token": "gh1"},
    {"provider": "github", "id": "hubot", "size": 5, "token": "gh-hubot"},
]
CLOCK = FakeClock(1_700_000_000.0)
HTTP = requests.Session()
FOLLOWERS = "/users/octocat/followers"


@pytest.fixture(scope="module")
def sim():
    with run_simulator({"accounts": ACCOUNTS}, clock=CLOCK) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(sim):
    sim.reset(accounts=True)


def get(sim, path=FOLLOWERS, token="gh1", etag=None, **params):
    headers = {"Authorization": f"token {token}"} if token else {}
    if etag is not None:
        headers["If-None-Match"] = etag
    return HTTP.get(sim.url("github", path), headers=headers, params=params)


def remaining(response) -> int:
    return int(response.headers["X-RateLimit-Remaining"])


def test_a_304_has_the_recorded_shape_and_uses_no_quota(sim):
    recorded_200, recorded_304 = (
        RECORDED["interactions"][0]["response"],
        RECORDED["interactions"][2]["response"],
    )
    first = get(sim)
    # the recorded forms: W/"<64 hex>" on the 200, "<the same>" on the 304
    weak = re.fullmatch(r'W/"([0-9a-f]{64})"', recorded_200["headers"]["ETag"])
    assert weak and recorded_304["headers"]["ETag"] == f'"{weak.group(1)}"'
    assert first.status_code == 200
    tag = re.fullmatch(r'W/"([0-9a-f]{64})"', first.headers["ETag"]).group(1)

    again = get(sim, etag=first.headers["ETag"])
    assert again.status_code == recorded_304["status"] == 304
    assert again.content == b"" and "body" not in recorded_304
    assert again.headers["ETag"] == f'"{tag}"'
    # the 304 did not count: remaining and used are where the 200 left them
    assert remaining(again) == remaining(first)
    assert again.headers["X-RateLimit-Used"] == first.headers["X-RateLimit-Used"] == "1"
    assert recorded_304["headers"]["X-RateLimit-Remaining"] == "4791"  # as before it
    # the next counted call takes the next one
    assert remaining(get(sim)) == remaining(first) - 1
    usage = sim.stats()["usage"]["github"]
    assert (usage["calls"], usage["counted"], usage["not_modified"]) == (3, 2, 1)


@pytest.mark.parametrize(
    "header",
    [
        '"{tag}"',  # strong form of the same tag: compared weakly
        'W/"{tag}"',
        '"0000", W/"{tag}"',  # one of several
        "*",
    ],
)
def test_if_none_match_is_compared_weakly(sim, header):
    tag = get(sim).headers["ETag"].removeprefix("W/").strip('"')
    assert get(sim, etag=header.format(tag=tag)).status_code == 304


def test_etags_are_tied_to_the_token(sim):
    """GitHub Support: "It's currently expected for ETags to be auth token specific"."""
    first = get(sim)
    other = get(sim, token="gh-hubot")  # another user's token, the same page
    assert other.status_code == 200 and other.headers["ETag"] != first.headers["ETag"]
    assert get(sim, token="gh-hubot", etag=first.headers["ETag"]).status_code == 200
    assert get(sim, token=None, etag=first.headers["ETag"]).status_code == 200


def test_an_unauthorized_304_still_counts(sim):
    first = get(sim, token=None)
    assert first.headers["X-RateLimit-Limit"] == "60"  # counted by address
    again = get(sim, token=None, etag=first.headers["ETag"])
    assert again.status_code == 304
    assert remaining(again) == remaining(first) - 1
    assert sim.stats()["usage"]["github"]["counted"] == 2


def test_the_etag_follows_the_content(sim):
    """A change to the network changes exactly the answers it shows in (GitHub lists
    oldest first: a new follower is on the last page, and in the profile's count)."""
    page1, page3 = get(sim, page=1), get(sim, page=3)
    profile = get(sim, "/users/octocat")
    tags = {name: r.headers["ETag"] for name, r in (("1", page1), ("3", page3), ("p", profile))}
    sim.change("github", "octocat", add=1)
    assert get(sim, page=1, etag=tags["1"]).status_code == 304
    last = get(sim, page=3, etag=tags["3"])
    assert last.status_code == 200 and len(last.json()) == 16
    counted = get(sim, "/users/octocat", etag=tags["p"])
    assert counted.status_code == 200 and counted.json()["followers"] == 76
    # a follower gone from page 1 changes page 1 (and shifts the rest)
    gone = sim.truth("github", "octocat")["ids"][3]
    sim.change("github", "octocat", remove=[gone])
    assert get(sim, page=1, etag=tags["1"]).status_code == 200


def test_other_providers_send_no_etag(sim):
    """Only GitHub's conditional requests are documented (``ProviderSim.ETAGS``)."""
    sim.put_accounts({"provider": "twitter", "id": "42", "size": 3, "token": "tw"})
    response = HTTP.get(
        sim.url("twitter", "/2/users/42/followers"),
        headers={"Authorization": "Bearer tw", "If-None-Match": "*"},
    )
    assert response.status_code == 200 and "ETag" not in response.headers
