"""The providers' push channels as plain data: one frame in, one follow event out.

Three providers push follow events (``PROVIDER-REALITIES.md`` BS-3, MA-3, X-3):

- Bluesky's Jetstream (https://github.com/bluesky-social/jetstream, v1 ``/subscribe``):
  one JSON object per WebSocket message, a repository commit. A follow record
  lives in the *follower's* repository (``did``); a create carries the followed
  DID in ``record.subject``, a delete carries only the record key (``rkey``):
  the subject must come from the consumer's own (follower, rkey) → subject map.
  ``time_us`` is the server's receive time, the cursor, and is not ordered.
  Identity and account events reach every subscriber whatever the filter.
- Mastodon's user notification stream
  (https://docs.joinmastodon.org/methods/streaming/): Server-Sent Events;
  ``event: notification`` carries a Notification entity; only ``type: follow``
  is a follow (there is no unfollow notification). Comment lines (``:)``,
  ``:`` heartbeats) may appear anywhere. The streaming base URL is the
  instance's ``configuration.urls.streaming`` (another host or port, ``ws(s)://``).
- X's Activity API (https://docs.x.com/x-api/activity/introduction): one JSON
  object per line of ``/2/activity/stream``; ``follow.follow`` / ``follow.unfollow``
  with ``payload.source`` (the follower) and ``payload.target`` (the followed),
  each a user either wrapped in ``data`` (the payload examples) or bare (the
  OpenAPI schema). ``event_uuid`` may be missing and may be negative.

Nothing here does I/O: the ``streams`` role (``sync.streams``) feeds frames in.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

FOLLOW_COLLECTION = "app.bsky.graph.follow"
#: the Mastodon stream of one user's notifications, under the streaming base URL
MASTODON_NOTIFICATION_STREAM = "/api/v1/streaming/user/notification"
#: the largest frame any channel may send us; a larger one is a misbehaving stream
MAX_FRAME_BYTES = 1 << 20


class FrameError(ValueError):
    """A frame that is not what the channel documents (the stream is misbehaving)."""


@dataclass(frozen=True)
class FollowEvent:
    """One follow or unfollow a channel pushed.

    ``follower`` follows (or stopped following) ``subject``; ``subject`` is None
    for a Jetstream delete (its record holds no subject). ``key`` names the
    event on its channel (a replayed event has the same key).
    """

    channel: str
    kind: str  # "follow" | "unfollow"
    key: str
    follower: str
    subject: str | None
    follower_handle: str = ""
    subject_handle: str = ""
    #: Jetstream: the follow record's key in the follower's repository
    rkey: str = ""


@dataclass(frozen=True)
class JetstreamFrame:
    """A Jetstream message: its cursor position, and the follow event if it is one."""

    time_us: int
    event: FollowEvent | None


def _json_object(text: str | bytes, what: str) -> dict:
    if len(text) > MAX_FRAME_BYTES:
        raise FrameError(f"{what}: frame of {len(text)} bytes")
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FrameError(f"{what}: not JSON ({exc.__class__.__name__})") from None
    if not isinstance(value, dict):
        raise FrameError(f"{what}: not a JSON object")
    return value


def _text(value, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise FrameError(f"missing {what}")
    return value


# -- Bluesky Jetstream ------------------------------------------------------------------
def parse_jetstream(text: str | bytes) -> JetstreamFrame:
    """One Jetstream v1 message. Other collections, identity and account events give
    no event but still move the cursor."""
    frame = _json_object(text, "jetstream")
    time_us = frame.get("time_us")
    if not isinstance(time_us, int) or isinstance(time_us, bool) or time_us <= 0:
        raise FrameError("jetstream: missing time_us")
    did = _text(frame.get("did"), "jetstream did")
    commit = frame.get("commit")
    if frame.get("kind") != "commit" or not isinstance(commit, dict):
        return JetstreamFrame(time_us, None)  # identity, account: not ours to use
    if commit.get("collection") != FOLLOW_COLLECTION:
        return JetstreamFrame(time_us, None)
    operation = commit.get("operation")
    rkey = _text(commit.get("rkey"), "jetstream rkey")
    # the rev names the commit: a replay of the same commit has the same key
    key = f"{did}/{rkey}/{operation}/{commit.get('rev') or ''}"
    if operation == "create":
        record = commit.get("record")
        subject = record.get("subject") if isinstance(record, dict) else None
        if not isinstance(subject, str) or not subject.startswith("did:"):
            raise FrameError("jetstream: follow create without a subject DID")
        event = FollowEvent("jetstream", "follow", key, did, subject, rkey=rkey)
    elif operation == "delete":
        # the record is gone and with it the subject: the consumer's map knows it
        event = FollowEvent("jetstream", "unfollow", key, did, None, rkey=rkey)
    else:  # "update" of a follow record changes nobody's network
        return JetstreamFrame(time_us, None)
    return JetstreamFrame(time_us, event)


# -- Mastodon streaming -------------------------------------------------------------------
class SseParser:
    """Server-Sent Events, fed line by line (``feed_line``), as the WHATWG spec reads them:
    ``event:`` and ``data:`` fields, a blank line ends an event, ``:`` starts a comment."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._size = 0

    def feed_line(self, line: str) -> tuple[str, str] | None:
        """One line without its end; returns (event name, data) when an event ends."""
        if line == "":
            if not self._data and not self._event:
                return None
            done = (self._event or "message", "\n".join(self._data))
            self._event, self._data, self._size = "", [], 0
            return done
        if line.startswith(":"):
            return None  # a comment (Mastodon's ":)" greeting, its heartbeats)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._size += len(value)
            if self._size > MAX_FRAME_BYTES:
                raise FrameError(f"sse: event data over {MAX_FRAME_BYTES} bytes")
            self._data.append(value)
        return None

    def feed(self, text: str) -> list[tuple[str, str]]:
        """A whole chunk of complete lines (a recorded body); the events it ends."""
        events = []
        for line in text.splitlines():
            done = self.feed_line(line)
            if done is not None:
                events.append(done)
        return events


@dataclass(frozen=True)
class MastodonFollow:
    """A ``follow`` notification: who followed (id, acct) and the notification's id."""

    notification_id: str
    follower: str
    follower_acct: str


def parse_mastodon_notification(data: str | dict) -> MastodonFollow | None:
    """A Notification entity (the data of ``event: notification``, or an item of
    ``GET /api/v1/notifications``); None unless it is a follow."""
    entity = _json_object(data, "mastodon notification") if isinstance(data, str) else data
    if not isinstance(entity, dict):
        raise FrameError("mastodon notification: not a JSON object")
    notification_id = entity.get("id")
    if not isinstance(notification_id, str) or not notification_id.isdigit():
        raise FrameError("mastodon notification: missing id")
    if entity.get("type") != "follow":
        return None
    account = entity.get("account")
    if not isinstance(account, dict):
        raise FrameError("mastodon follow notification: missing account")
    follower = account.get("id")
    if not isinstance(follower, str | int) or isinstance(follower, bool):
        raise FrameError("mastodon follow notification: missing account id")
    return MastodonFollow(notification_id, str(follower), str(account.get("acct") or ""))


def mastodon_streaming_url(instance: dict | str) -> str:
    """The user notification stream's SSE URL from ``GET /api/v2/instance`` (its
    ``configuration.urls.streaming``: ws→http, wss→https, the base's path kept)."""
    body = _json_object(instance, "mastodon instance") if isinstance(instance, str) else instance
    try:
        base = body["configuration"]["urls"]["streaming"]
    except (KeyError, TypeError):
        raise FrameError("mastodon instance: no configuration.urls.streaming") from None
    parts = urlsplit(_text(base, "streaming URL"))
    scheme = {"ws": "http", "wss": "https", "http": "http", "https": "https"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise FrameError(f"mastodon instance: streaming URL scheme {parts.scheme!r}")
    path = parts.path.rstrip("/") + MASTODON_NOTIFICATION_STREAM
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def notification_id_order(notification_id: str) -> int:
    """Mastodon ids are decimal strings; numeric order is their time order."""
    return int(notification_id) if notification_id.isdigit() else 0


# -- X Activity API ---------------------------------------------------------------------------
def _x_user(side) -> tuple[str, str]:
    """(id, username) of a payload's ``source`` or ``target``: ``{"data": user}`` in
    the published payload examples, a bare user in the OpenAPI schema."""
    if isinstance(side, dict) and isinstance(side.get("data"), dict):
        side = side["data"]
    if not isinstance(side, dict):
        raise FrameError("x activity: follow payload without source/target")
    user_id = side.get("id")
    if not isinstance(user_id, str) or not user_id.isdigit():
        raise FrameError("x activity: user without an id")
    return user_id, str(side.get("username") or "")


@dataclass(frozen=True)
class XActivity:
    """A follow event and the subscribed user it was delivered for (``filter.user_id``)."""

    filtered_user: str
    event: FollowEvent


def parse_x_activity(line: str | bytes) -> XActivity | None:
    """One line of ``/2/activity/stream``; None for other event types (keep-alive
    lines are blank: the caller skips them)."""
    envelope = _json_object(line, "x activity")
    data = envelope.get("data", envelope)
    if not isinstance(data, dict):
        raise FrameError("x activity: no data")
    event_type = data.get("event_type")
    if event_type not in ("follow.follow", "follow.unfollow"):
        return None
    filtered = (data.get("filter") or {}).get("user_id")
    filtered = _text(filtered, "x activity filter.user_id")
    payload = data.get("payload")
    if not isinstance(payload, dict):
        raise FrameError("x activity: no payload")
    follower, follower_name = _x_user(payload.get("source"))
    subject, subject_name = _x_user(payload.get("target"))
    uuid = data.get("event_uuid")
    if not isinstance(uuid, str | int) or isinstance(uuid, bool):
        # not every event carries one (the quickstart's stream example has none): the
        # event's own content names it then
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]
        uuid = f"sha-{digest}"
    kind = "follow" if event_type == "follow.follow" else "unfollow"
    event = FollowEvent(
        "x", kind, f"{filtered}/{uuid}", follower, subject, follower_name, subject_name
    )
    return XActivity(filtered, event)


def x_subscription_id(body: dict) -> str:
    """The id of a created subscription. The docs publish three shapes: ``data`` an
    array (quickstart), an object (management guide), ``data.subscription`` (OpenAPI)."""
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, list):
        data = data[0] if data else None
    if isinstance(data, dict) and isinstance(data.get("subscription"), dict):
        data = data["subscription"]
    found = data.get("subscription_id") if isinstance(data, dict) else None
    return _text(found, "x subscription_id")


def x_subscriptions(body: dict) -> list[dict]:
    """The subscriptions of a list answer (``data``: an array)."""
    data = body.get("data") if isinstance(body, dict) else None
    return [item for item in data or [] if isinstance(item, dict)]
