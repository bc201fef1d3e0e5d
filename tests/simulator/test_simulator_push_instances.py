"""Mastodon push per instance: ``/mastodon/<instance>/api/v2/instance`` announces that
instance's streaming URL (or the scenario's ``streaming_urls``), whose stream and
notifications serve that instance's tokens only; ``/_sim/push`` tells who sent which
token where."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import requests

from providers import push
from simulator.scenario import ScenarioError, parse_scenario
from simulator.testing import run_simulator

SCENARIO = {
    "accounts": [
        {"provider": "mastodon", "id": "7", "size": 5, "token": "ma-default"},
        {"provider": "mastodon", "id": "9", "size": 5, "token": "ma-a", "instance": "a.example"},
        {"provider": "mastodon", "id": "11", "size": 5, "token": "ma-b", "instance": "b.example"},
    ],
    "streaming_urls": {"b.example": "wss://169.254.169.254/b"},
}


@pytest.fixture(scope="module")
def sim():
    with run_simulator(SCENARIO) as running:
        yield running


def instance_answer(sim, instance):
    return requests.get(sim.url("mastodon", f"/{instance}/api/v2/instance"), timeout=10).json()


def requests_seen(sim) -> list[dict]:
    return requests.get(f"{sim.base_url}/_sim/push", timeout=10).json()["mastodon_requests"]


def test_each_instance_announces_its_own_streaming_url_or_the_scenarios(sim):
    own = push.mastodon_streaming_url(instance_answer(sim, "a.example"))
    assert own == sim.url("mastodon", "/a.example/api/v1/streaming/user/notification")
    hostile = push.mastodon_streaming_url(instance_answer(sim, "b.example"))
    assert hostile == "https://169.254.169.254/b/api/v1/streaming/user/notification"


def test_a_change_on_an_instance_is_pushed_on_that_instances_stream_only(sim):
    url = push.mastodon_streaming_url(instance_answer(sim, "a.example"))
    default_url = sim.url("mastodon", "/api/v1/streaming/user/notification")

    async def scenario():
        async with aiohttp.ClientSession() as session:
            # a token is its own instance's: elsewhere it is unknown
            wrong = await session.get(default_url, headers={"Authorization": "Bearer ma-a"})
            assert wrong.status == 401
            stream = await session.get(url, headers={"Authorization": "Bearer ma-a"})
            assert stream.status == 200
            await asyncio.sleep(0.2)
            added = await asyncio.to_thread(
                requests.post,
                f"{sim.base_url}/_sim/changes",
                json={
                    "provider": "mastodon",
                    "account_id": "9",
                    "instance": "a.example",
                    "relation": "followers",
                    "add": 1,
                },
                timeout=10,
            )
            parser = push.SseParser()
            while True:
                line = await asyncio.wait_for(stream.content.readline(), 10)
                done = parser.feed_line(line.decode().rstrip("\n"))
                if done and done[0] == "notification":
                    stream.close()
                    return added.json(), push.parse_mastodon_notification(done[1])

    added, follow = asyncio.run(scenario())
    assert [follow.follower] == added["added"]
    listing = requests.get(
        sim.url("mastodon", "/a.example/api/v1/notifications"),
        params={"types[]": "follow"},
        headers={"Authorization": "Bearer ma-a"},
        timeout=10,
    )
    assert [item["id"] for item in listing.json()] == [follow.notification_id]
    assert "/mastodon/a.example/api/v1/notifications" in listing.headers["Link"]
    seen = {(r["instance"], r["endpoint"], r["account_id"]) for r in requests_seen(sim)}
    assert {("a.example", "streaming", "9"), ("a.example", "notifications", "9")} <= seen
    assert ("", "streaming", "9") in seen  # the wrong call above, refused but recorded


def test_streaming_urls_are_checked():
    with pytest.raises(ScenarioError):
        parse_scenario({"streaming_urls": {"a.example": "https://x"}})
    with pytest.raises(ScenarioError):
        parse_scenario({"streaming_urls": {"api": "wss://x"}})
    assert parse_scenario({"streaming_urls": {"": "wss://s.example/"}}).streaming_urls == {
        "": "wss://s.example"
    }
