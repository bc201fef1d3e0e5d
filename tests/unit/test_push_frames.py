"""The push channels' parsers (``providers.push``) against real recorded frames
(tests/fixtures/real-push, SOURCES.md says where each comes from)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from providers import push

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "real-push"


def lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


# -- Jetstream -------------------------------------------------------------------------
def test_jetstream_follow_creates_and_deletes():
    frames = [
        push.parse_jetstream(line)
        for line in lines("bluesky/jetstream_v1_follow_create_delete_2026-07-04.jsonl")
    ]
    events = [frame.event for frame in frames]
    assert [e.kind for e in events].count("follow") == 6
    assert [e.kind for e in events].count("unfollow") == 3
    delete = events[0]
    assert (delete.follower, delete.rkey, delete.subject) == (
        "did:plc:ux2eeflheratfrvp3xfbp4zi",
        "3m3q3ut7jsm2m",
        None,
    )
    assert frames[0].time_us == 1783175888112407
    create = events[1]
    assert (create.follower, create.subject, create.rkey) == (
        "did:plc:f2furrjn2jdhjcn2td54ivxx",
        "did:plc:mlbpil2fwz43vfn6uuysxtqa",
        "3mptbypmibb2v",
    )
    assert create.key == "did:plc:f2furrjn2jdhjcn2td54ivxx/3mptbypmibb2v/create/3mptbypmq3b2v"
    # time_us is not ordered: line 3 is older than line 2
    assert frames[2].time_us < frames[1].time_us
    assert (events[8].follower, events[8].subject) == (
        "did:plc:5ulfybw6lxycufgi2i6tyzm6",
        "did:plc:22wzqwkxddb54hyub4mlkh6a",
    )
    assert len({e.key for e in events}) == 9


def test_jetstream_identity_and_account_events_move_the_cursor_only():
    frames = [
        push.parse_jetstream(line)
        for line in lines("bluesky/jetstream_v1_identity_account_2026-07-04.jsonl")
    ]
    assert [f.event for f in frames] == [None, None]
    assert [f.time_us for f in frames] == [1783175888384849, 1783175888390226]
    readme = [
        push.parse_jetstream(line)
        for line in lines("bluesky/jetstream_readme_example_events_2024.jsonl")
    ]
    unfollows = [f.event for f in readme if f.event]
    assert [(e.kind, e.follower, e.rkey) for e in unfollows] == [
        ("unfollow", "did:plc:rfov6bpyztcnedeyyzgfq42k", "3l3dn7tku762u")
    ]


def test_jetstream_window_filters_to_follows_and_the_cursor_is_the_maximum():
    frames = [
        push.parse_jetstream(line)
        for line in lines("bluesky/jetstream_v1_window_lines_10-25_2026-07-04.jsonl")
    ]
    follows = [f.event for f in frames if f.event]
    assert [(e.kind, e.follower) for e in follows] == [
        ("unfollow", "did:plc:ux2eeflheratfrvp3xfbp4zi"),
        ("follow", "did:plc:f2furrjn2jdhjcn2td54ivxx"),
        ("follow", "did:plc:eu6vwrajoa7r5smvsz6z3leh"),
    ]
    assert max(f.time_us for f in frames) == 1783175888137877
    backwards = sum(1 for a, b in zip(frames, frames[1:]) if b.time_us < a.time_us)
    assert backwards == 5


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[]",
        '{"did": "did:plc:x", "kind": "commit"}',
        '{"did": "did:plc:x", "time_us": 5, "kind": "commit", "commit": {"operation":'
        ' "create", "collection": "app.bsky.graph.follow", "rkey": "r", "record": {}}}',
        "x" * (push.MAX_FRAME_BYTES + 1),
    ],
)
def test_jetstream_malformed_frames_are_refused(frame):
    with pytest.raises(push.FrameError):
        push.parse_jetstream(frame)


# -- Mastodon -----------------------------------------------------------------------------
def test_mastodon_recorded_stream_parses_comments_and_all():
    body = (FIXTURES / "mastodon/streaming_user_sse_4.6.4.body.txt").read_text()
    events = push.SseParser().feed(body)
    assert [name for name, _ in events] == [
        "update",
        "notification",
        "update",
        "notification",
        "status.update",
        "delete",
    ]
    assert events[-1][1] == "117024236332527350"
    mentions = [
        push.parse_mastodon_notification(data) for name, data in events if name == "notification"
    ]
    assert mentions == [None, None]  # mentions are no follows
    assert json.loads(events[1][1])["id"] == "14"


def test_mastodon_docs_frame_and_follow_entity():
    text = (
        FIXTURES / "mastodon/docs_streaming_user_notification_frame_mention.sse.txt"
    ).read_text()
    [(name, data)] = push.SseParser().feed(text)
    assert name == "notification" and json.loads(data)["id"] == "68739215"
    listing = fixture("mastodon/notifications_types_follow_mention_200_link_next_4.4.3.json")
    found = [push.parse_mastodon_notification(item) for item in listing["response"]["body"]]
    assert found == [None, push.MastodonFollow("19", "115045157726281124", "admin")]


def test_mastodon_streaming_url_comes_from_the_instance():
    recorded = fixture("mastodon/instance_v2_200_streaming_url_other_port_4.6.4.json")
    assert push.mastodon_streaming_url(recorded["response"]["body"]) == (
        "http://localhost:4000/api/v1/streaming/user/notification"
    )
    docs = fixture("mastodon/docs_instance_v2_mastodon_social_example.json")
    assert push.mastodon_streaming_url(docs) == (
        "https://streaming.mastodon.social/api/v1/streaming/user/notification"
    )
    with pytest.raises(push.FrameError):
        push.mastodon_streaming_url({"configuration": {"urls": {"streaming": "ftp://x"}}})


# -- X ------------------------------------------------------------------------------------------
def test_x_follow_and_unfollow_events():
    follow = push.parse_x_activity((FIXTURES / "x/activity_event_follow.follow.json").read_text())
    assert follow.filtered_user == "1111111111111111111"
    event = follow.event
    assert (event.kind, event.follower, event.subject) == (
        "follow",
        "1111111111111111111",
        "4444444444444444444",
    )
    assert (event.follower_handle, event.subject_handle) == ("ExampleUser", "AnotherUser")
    assert event.key == "1111111111111111111/-7953119945885597316"
    unfollow = push.parse_x_activity(
        (FIXTURES / "x/activity_event_follow.unfollow.json").read_text()
    )
    assert unfollow.event.kind == "unfollow"
    assert unfollow.event.key.endswith("/-4233426745281461957")


def test_x_bare_users_of_the_openapi_schema_and_events_without_uuid():
    raw = fixture("x/activity_event_follow.follow.json")
    data = raw["data"]
    del data["event_uuid"]
    for side in ("source", "target"):
        data["payload"][side] = data["payload"][side]["data"]
    parsed = push.parse_x_activity(json.dumps(raw))
    assert parsed.event.follower == "1111111111111111111"
    assert parsed.event.key.startswith("1111111111111111111/sha-")
    # the same event again has the same key
    assert push.parse_x_activity(json.dumps(raw)).event.key == parsed.event.key
    bio = (FIXTURES / "x/activity_stream_event_profile.update.bio_quickstart.json").read_text()
    assert push.parse_x_activity(bio) is None


def test_x_subscription_ids_in_all_three_published_shapes():
    quickstart = fixture("x/activity_subscription_create_response_quickstart_data_array.json")
    management = fixture("x/activity_subscription_create_response_management_data_object.json")
    assert push.x_subscription_id(quickstart) == "1976325569252868096"
    assert push.x_subscription_id(management) == push.x_subscription_id(
        {"data": {"subscription": {"subscription_id": management["data"]["subscription_id"]}}}
    )
    listed = push.x_subscriptions(fixture("x/activity_subscriptions_list_response.json"))
    assert [s["subscription_id"] for s in listed] == ["1976325569252868096", "1976325569252868097"]
