"""The simulator's push channels (``simulator.push``): each ``POST /_sim/changes`` goes out
on the provider's channel in the real channel's format (the parsers of
``providers.push``, held to the real recorded frames, read them back)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import requests

from providers import push
from simulator.testing import run_simulator

SCENARIO = {
    "accounts": [
        {"provider": "bluesky", "id": "alice.bsky.social", "size": 5, "token": "bs-tok"},
        {"provider": "mastodon", "id": "7", "size": 5, "token": "ma-tok"},
        {"provider": "mastodon", "id": "8", "size": 5, "token": "ma-tok-8"},
        {"provider": "twitter", "id": "42", "size": 5, "token": "tw-tok"},
    ]
}


@pytest.fixture(scope="module")
def sim():
    with run_simulator(SCENARIO) as running:
        yield running


def change(sim, provider, account_id, **body):
    response = requests.post(
        f"{sim.base_url}/_sim/changes",
        json={"provider": provider, "account_id": account_id, **body},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


def profile_did(sim) -> str:
    answer = requests.get(
        sim.url("bluesky", "/xrpc/app.bsky.actor.getProfile"),
        params={"actor": "alice.bsky.social"},
        headers={"Authorization": "Bearer bs-tok"},
        timeout=10,
    )
    return answer.json()["did"]


async def read_ws(url: str, count: int, timeout: float = 10.0) -> list[str]:
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        frames = []
        while len(frames) < count:
            message = await asyncio.wait_for(ws.receive(), timeout)
            assert message.type == aiohttp.WSMsgType.TEXT, message
            frames.append(message.data)
        return frames


def test_jetstream_pushes_follow_creates_and_deletes_and_replays_from_a_cursor(sim):
    own = profile_did(sim)
    url = sim.url("bluesky", "/jetstream/subscribe?wantedCollections=app.bsky.graph.follow")

    async def scenario():
        reader = asyncio.ensure_future(read_ws(url, 3))
        await asyncio.sleep(0.3)  # connected before the changes
        added = await asyncio.to_thread(change, sim, "bluesky", "alice.bsky.social", add=2)
        await asyncio.to_thread(
            change, sim, "bluesky", "alice.bsky.social", remove=added["added"][:1]
        )
        return added, await reader

    added, frames = asyncio.run(scenario())
    parsed = [push.parse_jetstream(frame) for frame in frames]
    creates = [p.event for p in parsed if p.event.kind == "follow"]
    assert [(e.follower, e.subject) for e in creates] == [(d, own) for d in added["added"]]
    [delete] = [p.event for p in parsed if p.event.kind == "unfollow"]
    # the delete names the record key of the create, and no subject
    assert (delete.follower, delete.rkey, delete.subject) == (
        creates[0].follower,
        creates[0].rkey,
        None,
    )
    cursor = parsed[1].time_us
    replay = asyncio.run(read_ws(f"{url}&cursor={cursor}", 2))
    assert replay == frames[1:]
    # wantedDids filters by repository (the follower's, for a follow)
    one = asyncio.run(read_ws(f"{url}&cursor=1&wantedDids={added['added'][1]}", 1))
    assert push.parse_jetstream(one[0]).event.follower == added["added"][1]


def test_mastodon_stream_per_token_with_follow_notifications_and_gap_fill(sim):
    instance = requests.get(sim.url("mastodon", "/api/v2/instance"), timeout=10).json()
    stream_url = push.mastodon_streaming_url(instance)
    assert stream_url == sim.url("mastodon", "/api/v1/streaming/user/notification")
    denied = requests.get(stream_url, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert denied.status_code == 401

    async def scenario():
        async with aiohttp.ClientSession() as session:
            seven = await session.get(stream_url, headers={"Authorization": "Bearer ma-tok"})
            eight = await session.get(stream_url, headers={"Authorization": "Bearer ma-tok-8"})
            assert seven.headers["Content-Type"].startswith("text/event-stream")
            await asyncio.sleep(0.2)
            added = await asyncio.to_thread(change, sim, "mastodon", "7", add=2)
            # following someone notifies them, not the account: nothing on the stream
            await asyncio.to_thread(change, sim, "mastodon", "7", relation="following", add=1)
            parser, follows = push.SseParser(), []
            while len(follows) < 2:
                line = await asyncio.wait_for(seven.content.readline(), 10)
                done = parser.feed_line(line.decode().rstrip("\n"))
                if done and done[0] == "notification":
                    follows.append(push.parse_mastodon_notification(done[1]))
            other = await asyncio.wait_for(eight.content.readline(), 1)
            seven.close()
            eight.close()
            return added, follows, other

    added, follows, other = asyncio.run(scenario())
    assert [f.follower for f in follows] == added["added"]
    assert other == b":)\n"  # account 8's stream got only its greeting
    listing = requests.get(
        sim.url("mastodon", "/api/v1/notifications"),
        params={"types[]": "follow", "since_id": follows[0].notification_id},
        headers={"Authorization": "Bearer ma-tok"},
        timeout=10,
    )
    found = [push.parse_mastodon_notification(item) for item in listing.json()]
    assert found == [follows[1]]
    assert 'rel="prev"' in listing.headers["Link"]


def test_x_subscriptions_and_stream_bill_each_event(sim):
    headers = {"Authorization": "Bearer app-bearer"}
    base = sim.url("twitter", "/2/activity")
    made = requests.post(
        f"{base}/subscriptions",
        json={"event_type": "follow.follow", "filter": {"user_id": "42"}, "tag": "netsync"},
        headers=headers,
        timeout=10,
    )
    assert made.status_code == 200
    subscription_id = push.x_subscription_id(made.json())
    requests.post(
        f"{base}/subscriptions",
        json={"event_type": "follow.unfollow", "filter": {"user_id": "42"}},
        headers=headers,
        timeout=10,
    ).raise_for_status()
    listed = push.x_subscriptions(
        requests.get(f"{base}/subscriptions", headers=headers, timeout=10).json()
    )
    assert len(listed) == 2
    before = sim.stats()["usage"].get("twitter", {}).get("resources", 0)

    async def scenario():
        async with aiohttp.ClientSession() as session:
            stream = await session.get(f"{base}/stream", headers=headers)
            await asyncio.sleep(0.2)
            added = await asyncio.to_thread(change, sim, "twitter", "42", add=1)
            await asyncio.to_thread(change, sim, "twitter", "42", remove=added["added"])
            events = []
            while len(events) < 2:
                line = (await asyncio.wait_for(stream.content.readline(), 10)).strip()
                if line:
                    events.append(push.parse_x_activity(line))
            stream.close()
            return added, events

    added, events = asyncio.run(scenario())
    assert [(e.event.kind, e.event.follower, e.event.subject) for e in events] == [
        ("follow", added["added"][0], "42"),
        ("unfollow", added["added"][0], "42"),
    ]
    assert sim.stats()["usage"]["twitter"]["resources"] == before + 2
    gone = requests.delete(f"{base}/subscriptions/{subscription_id}", headers=headers, timeout=10)
    assert gone.json()["data"] == {"deleted": True}
    assert requests.get(f"{base}/stream", timeout=10).status_code == 401


def test_stream_disconnect_fault_cuts_connections_and_forget_drops_the_replay(sim):
    url = sim.url("bluesky", "/jetstream/subscribe?wantedCollections=app.bsky.graph.follow")

    async def scenario():
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            await asyncio.sleep(0.2)
            await asyncio.to_thread(
                sim.add_faults, {"kind": "stream_disconnect", "provider": "bluesky", "forget": True}
            )
            message = await asyncio.wait_for(ws.receive(), 10)
            return message.type

    assert asyncio.run(scenario()) in (
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.CLOSED,
        aiohttp.WSMsgType.ERROR,
    )
    assert requests.get(f"{sim.base_url}/_sim/push", timeout=10).json()["jetstream_buffered"] == 0
    bad = requests.post(
        f"{sim.base_url}/_sim/faults",
        json={"add": [{"kind": "stream_disconnect", "provider": "github"}]},
        timeout=10,
    )
    assert bad.status_code == 400
