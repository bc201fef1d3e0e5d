"""The providers' push channels: each ``POST /_sim/changes`` pushed as the real one would.

- Bluesky Jetstream v1, ``GET /bluesky/jetstream/subscribe`` (WebSocket):
  ``wantedCollections`` (NSIDs or ``prefix.*``), ``wantedDids`` (repositories),
  ``cursor`` (unix microseconds: replay of what the buffer still holds from
  then on, then live). A follow is a record in the *follower's* repository: a
  create carries ``record.subject``, a delete only the record key.
- Mastodon, ``GET /mastodon/api/v1/streaming/user/notification`` (Server-Sent
  Events, per token: ``Authorization: Bearer`` or the legacy ``access_token``
  parameter): a ``follow`` notification when someone follows the account (adds
  only; Mastodon has no unfollow notification). The stream opens with the
  ``:)`` comment and beats ``:thump`` comments. ``GET /mastodon/api/v2/instance``
  announces the streaming base URL (``configuration.urls.streaming``, ``ws://``);
  ``GET /mastodon/api/v1/notifications?types[]=follow&since_id=|min_id=|max_id=``
  lists the notifications, newest first, paged by ``Link``. Each instance
  serves the three under ``/mastodon/<instance>/…`` too: its own streaming URL
  (or the scenario's ``streaming_urls[<instance>]``), its own accounts' tokens
  only (another instance's token: 401), its own accounts' notifications.
  ``/_sim/push`` ``mastodon_requests`` counts who sent which token where:
  (instance, endpoint, the token's account), the token never shown.
- X Activity API: ``/twitter/2/activity/subscriptions`` (create, list, delete;
  an app bearer token), ``GET /twitter/2/activity/stream`` (one JSON event per
  line, ``\\r\\n`` keep-alives, ``backfill_minutes`` 0–5 or ``start_time`` within them): ``follow.follow`` and
  ``follow.unfollow`` for subscribed users, each delivery billed (stats
  ``usage.twitter.resources``).

A ``stream_disconnect`` fault (``{"kind": "stream_disconnect", "provider": P}``)
cuts every open connection of P's channel when it is added; with
``"forget": true`` the channel's replay buffer is dropped too (a gap longer
than the channel can replay). These routes are not in the providers' quota
pipeline: the real channels have no per-call quota either.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
from collections import deque
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from .providers import PROVIDER_SIMS
from .providers.bluesky import account_did
from .providers.mastodon import _account_item
from .providers.twitter import _user_item

FOLLOW = "app.bsky.graph.follow"
#: how long the Jetstream buffer replays (v2 keeps 36 h); the X backfill reaches 5 min
JETSTREAM_REPLAY_S = 36 * 3600.0
X_BACKFILL_S = 5 * 60.0
#: Mastodon's streaming server beats every 15 s (``:thump``); X sends a newline every 20 s
MASTODON_HEARTBEAT_S = 15.0
X_KEEPALIVE_S = 20.0
#: how often an idle stream looks whether its client has gone (so ``/_sim/push`` counts
#: only the streams still open)
GONE_CHECK_S = 0.5
#: a live connection's queue is bounded; a consumer this far behind is cut, as a
#: real server drops a slow consumer
QUEUE_LIMIT = 100_000
_CUT = object()
_TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"


def tid(micros: int) -> str:
    """A record key as AT Protocol makes them: a 13-character base32-sortable timestamp."""
    value = (micros << 10) & ((1 << 64) - 1)
    chars = []
    for _ in range(13):
        chars.append(_TID_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def iso(moment: float) -> str:
    stamp = datetime.datetime.fromtimestamp(moment, datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


@dataclass(eq=False)
class Listener:
    """One open push connection: what it wants and its queue of frames."""

    provider: str
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    collections: tuple = ()
    dids: frozenset = frozenset()
    account_id: str = ""

    def wants(self, frame: dict) -> bool:
        if self.dids and frame["did"] not in self.dids:
            return False
        if not self.collections:
            return True
        collection = frame.get("commit", {}).get("collection", "")
        return any(
            collection == want or (want.endswith(".*") and collection.startswith(want[:-1]))
            for want in self.collections
        )

    def put(self, item) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:  # too slow: cut, as a real server would
            self.queue = asyncio.Queue(1)
            self.queue.put_nowait(_CUT)


class PushHub:
    """The channels' buffers and open connections (one per simulator, all on one loop)."""

    def __init__(self, sim) -> None:
        self.sim = sim
        self.listeners: set[Listener] = set()
        self.jetstream: deque[tuple[int, dict]] = deque()
        self.last_time_us = 0
        #: (follower DID, subject DID) -> the record key of that follow
        self.rkeys: dict[tuple[str, str], str] = {}
        #: account id -> its notifications, oldest first: (id, Notification JSON)
        self.notifications: dict[str, list[tuple[int, str]]] = {}
        self.notification_seq = 0
        #: subscription id -> {"subscription_id", "event_type", "filter", "tag", ...}
        self.subscriptions: dict[str, dict] = {}
        self.subscription_seq = 1976325569252868096
        self.x_events: deque[tuple[float, str]] = deque()
        #: (instance or "", endpoint, the token's account or "") -> requests
        self.mastodon_requests: dict[tuple[str, str, str], int] = {}

    # -- publishing ----------------------------------------------------------------
    def publish(self, change: dict) -> None:
        """Push one applied change (``simulator.changes.apply_change``'s answer)."""
        provider = change["provider"]
        account = self.sim.account(provider, change["account_id"])
        if account is None:
            return
        handler = {"bluesky": self._bluesky, "mastodon": self._mastodon, "twitter": self._x}
        if provider in handler:
            handler[provider](account, change)

    def _listeners(self, provider: str):
        return [listener for listener in self.listeners if listener.provider == provider]

    def _time_us(self) -> int:
        self.last_time_us = max(self.last_time_us + 1, int(self.sim.clock() * 1_000_000))
        return self.last_time_us

    def _bluesky(self, account, change: dict) -> None:
        own = account_did(account)
        for kind, ids in (("create", change["added"]), ("delete", change["removed"])):
            for did in ids:
                follower, subject = (did, own) if change["relation"] == "followers" else (own, did)
                time_us = self._time_us()
                commit = {"rev": tid(time_us + 1), "operation": kind, "collection": FOLLOW}
                if kind == "create":
                    rkey = self.rkeys[(follower, subject)] = tid(time_us)
                    commit["rkey"] = rkey
                    commit["record"] = {
                        "$type": FOLLOW,
                        "createdAt": iso(time_us / 1e6),
                        "subject": subject,
                    }
                    commit["cid"] = "bafyrei" + hashlib.sha256(rkey.encode()).hexdigest()[:52]
                else:
                    rkey = self.rkeys.pop((follower, subject), None)
                    commit["rkey"] = rkey or _old_rkey(follower, subject)
                frame = {"did": follower, "time_us": time_us, "kind": "commit", "commit": commit}
                self._jetstream_append(time_us, frame)

    def _jetstream_append(self, time_us: int, frame: dict) -> None:
        self.jetstream.append((time_us, frame))
        horizon = time_us - int(JETSTREAM_REPLAY_S * 1_000_000)
        while self.jetstream and self.jetstream[0][0] < horizon:
            self.jetstream.popleft()
        text = json.dumps(frame, separators=(",", ":"))
        for listener in self._listeners("bluesky"):
            if listener.wants(frame):
                listener.put(text)

    def _mastodon(self, account, change: dict) -> None:
        if change["relation"] != "followers":
            return  # following someone notifies them, not the account
        sim = PROVIDER_SIMS["mastodon"]
        for connection_id in change["added"]:
            self.notification_seq += 1
            notification_id = 10**6 + self.notification_seq
            body = (
                f'{{"id":"{notification_id}","type":"follow",'
                f'"created_at":"{iso(self.sim.clock())}","group_key":"ungrouped-{notification_id}",'
                f'"account":{_account_item(sim.native_of(connection_id))}}}'
            )
            self.notifications.setdefault(account.id, []).append((notification_id, body))
            for listener in self._listeners("mastodon"):
                if listener.account_id == account.id:
                    listener.put(f"event: notification\ndata: {body}\n\n")

    def _x(self, account, change: dict) -> None:
        own = {"id": account.id, "name": account.name or account.id}
        own["username"] = account.handle or f"user{account.id}"[:15]
        sim = PROVIDER_SIMS["twitter"]
        for event_type, ids in (
            ("follow.follow", change["added"]),
            ("follow.unfollow", change["removed"]),
        ):
            subscription = self._subscription_for(account.id, event_type)
            if subscription is None:
                continue
            for connection_id in ids:
                other = json.loads(_user_item(sim.native_of(connection_id)))
                source, target = (other, own) if change["relation"] == "followers" else (own, other)
                digest = hashlib.sha256(
                    f"{event_type}{account.id}{connection_id}{self.sim.clock()}".encode()
                )
                event = {
                    "data": {
                        "event_uuid": str(int.from_bytes(digest.digest()[:8], "big", signed=True)),
                        "filter": {"user_id": account.id},
                        "event_type": event_type,
                        "tag": subscription.get("tag", ""),
                        "payload": {"source": {"data": source}, "target": {"data": target}},
                    }
                }
                line = json.dumps(event, separators=(",", ":"))
                now = self.sim.clock()
                self.x_events.append((now, line))
                while self.x_events and self.x_events[0][0] < now - X_BACKFILL_S:
                    self.x_events.popleft()
                for listener in self._listeners("twitter"):
                    listener.put(line)

    def _subscription_for(self, user_id: str, event_type: str) -> dict | None:
        for subscription in self.subscriptions.values():
            if (
                subscription["event_type"] == event_type
                and subscription["filter"].get("user_id") == user_id
            ):
                return subscription
        return None

    # -- faults ----------------------------------------------------------------------------
    def disconnect(self, provider: str, forget: bool = False) -> int:
        """Cut every open connection of ``provider``'s channel; ``forget``: drop its replay."""
        cut = self._listeners(provider)
        for listener in cut:
            listener.put(_CUT)
        if forget and provider == "bluesky":
            self.jetstream.clear()
        if forget and provider == "twitter":
            self.x_events.clear()
        return len(cut)

    def stats(self) -> dict:
        open_by = {}
        for listener in self.listeners:
            open_by[listener.provider] = open_by.get(listener.provider, 0) + 1
        return {
            "open": open_by,
            "jetstream_buffered": len(self.jetstream),
            "x_subscriptions": len(self.subscriptions),
            "mastodon_requests": [
                {"instance": instance, "endpoint": endpoint, "account_id": account, "n": n}
                for (instance, endpoint, account), n in sorted(self.mastodon_requests.items())
            ],
        }


def _parse_iso(value: str) -> float:
    """``2026-12-07T15:22:05.000Z`` (X's time format) as epoch seconds."""
    moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _old_rkey(follower: str, subject: str) -> str:
    """The record key of a follow made before the simulator started (stable)."""
    digest = hashlib.sha256(f"{follower} {subject}".encode()).digest()
    return tid(int.from_bytes(digest[:6], "big"))


# -- HTTP handlers --------------------------------------------------------------------------
HUB = web.AppKey("push_hub", PushHub)


def add_routes(app: web.Application, sim) -> None:
    """Register the channels (before the providers' catch-all paths)."""
    hub = PushHub(sim)
    app[HUB] = sim.push = hub
    app.router.add_get("/bluesky/jetstream/subscribe", _jetstream(hub))
    for prefix in ("/mastodon", "/mastodon/{instance}"):
        app.router.add_get(f"{prefix}/api/v1/streaming/user/notification", _mastodon_stream(hub))
        app.router.add_get(f"{prefix}/api/v2/instance", _mastodon_instance(hub))
        app.router.add_get(f"{prefix}/api/v1/notifications", _mastodon_notifications(hub))
    app.router.add_route("*", "/twitter/2/activity/subscriptions", _x_subscriptions(hub))
    app.router.add_delete(
        "/twitter/2/activity/subscriptions/{subscription_id}", _x_unsubscribe(hub)
    )
    app.router.add_get("/twitter/2/activity/stream", _x_stream(hub))
    app.router.add_get("/_sim/push", lambda request: _json(hub.stats()))

    async def close_channels(_app) -> None:
        for provider in ("bluesky", "mastodon", "twitter"):
            hub.disconnect(provider)
        await asyncio.sleep(0)  # let the handlers see it and end

    app.on_shutdown.append(close_channels)


def _json(body, status: int = 200, headers=None) -> web.Response:
    return web.Response(
        text=json.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _jetstream(hub: PushHub):
    async def handle(request: web.Request) -> web.StreamResponse:
        query = request.query
        cursor = query.get("cursor")
        if cursor is not None and not cursor.isdigit():
            return _json({"error": "cursor must be unix microseconds"}, 400)
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        listener = Listener(
            "bluesky",
            collections=tuple(query.getall("wantedCollections", [])),
            dids=frozenset(query.getall("wantedDids", [])),
        )
        # the replay and the registration in one step of the loop: nothing between
        # them is missed or sent twice
        replay = [f for t, f in hub.jetstream if cursor is not None and t >= int(cursor)]
        hub.listeners.add(listener)
        try:
            for frame in replay:
                if listener.wants(frame):
                    await ws.send_str(json.dumps(frame, separators=(",", ":")))
            reader = asyncio.ensure_future(_drain_ws(ws))
            while not reader.done():
                getter = asyncio.ensure_future(listener.queue.get())
                await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    break
                item = getter.result()
                if item is _CUT:
                    if request.transport is not None:
                        request.transport.abort()
                    break
                await ws.send_str(item)
            reader.cancel()
        except (ConnectionResetError, RuntimeError):
            pass
        finally:
            hub.listeners.discard(listener)
        return ws

    return handle


async def _drain_ws(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the client sends until it closes."""
    async for message in ws:
        if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            break


def _gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def _mastodon_instance_of(request: web.Request) -> str:
    """The instance a request was sent to ("" for the default one)."""
    return request.match_info.get("instance", "")


def _mastodon_owner(hub: PushHub, request: web.Request, endpoint: str):
    """The account a Mastodon token belongs to on this instance, or the 401 Mastodon
    answers (a token another instance issued means nothing here)."""
    header = request.headers.get("Authorization", "")
    word, _, token = header.partition(" ")
    if word.lower() != "bearer" or not token.strip():
        token = request.query.get("access_token", "")  # legacy, still accepted
    token = token.strip()
    instance = _mastodon_instance_of(request)
    owner = hub.sim.tokens.get("mastodon", token) if token else None
    seen = (instance, endpoint, owner.account_id if owner else "")
    hub.mastodon_requests[seen] = hub.mastodon_requests.get(seen, 0) + 1
    problem = hub.sim.tokens.problem("mastodon", token, hub.sim.clock()) if token else "missing"
    account = hub.sim.account("mastodon", owner.account_id) if owner else None
    if problem is None and account is not None and (account.instance or "") != instance:
        problem = "unknown"
    if problem is not None:
        return None, _json({"error": "The access token is invalid"}, 401)
    return owner.account_id, None


def _mastodon_stream(hub: PushHub):
    async def handle(request: web.Request) -> web.StreamResponse:
        account_id, refusal = _mastodon_owner(hub, request, "streaming")
        if refusal is not None:
            return refusal
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        listener = Listener("mastodon", account_id=account_id)
        hub.listeners.add(listener)
        try:
            await response.write(b":)\n")
            beat_at = hub.sim.clock() + MASTODON_HEARTBEAT_S
            while True:
                try:
                    item = await asyncio.wait_for(listener.queue.get(), GONE_CHECK_S)
                except TimeoutError:
                    if _gone(request):
                        break
                    if hub.sim.clock() < beat_at:
                        continue
                    item = ":thump\n"
                    beat_at = hub.sim.clock() + MASTODON_HEARTBEAT_S
                if item is _CUT:
                    if request.transport is not None:
                        request.transport.abort()
                    break
                await response.write(item.encode())
        except (ConnectionResetError, RuntimeError):
            pass
        finally:
            hub.listeners.discard(listener)
        return response

    return handle


def _mastodon_instance(hub: PushHub):
    async def handle(request: web.Request) -> web.Response:
        instance = _mastodon_instance_of(request)
        seen = (instance, "instance", "")
        hub.mastodon_requests[seen] = hub.mastodon_requests.get(seen, 0) + 1
        own = f"ws://{request.host}/mastodon" + (f"/{instance}" if instance else "")
        base = hub.sim.scenario.streaming_urls.get(instance, own)
        return _json(
            {
                "domain": instance or request.host,
                "title": "Mastodon (simulator)",
                "version": "4.6.4",
                "api_versions": {"mastodon": 11},
                "configuration": {"urls": {"streaming": base, "status": None}},
            }
        )

    return handle


def _mastodon_notifications(hub: PushHub):
    async def handle(request: web.Request) -> web.Response:
        account_id, refusal = _mastodon_owner(hub, request, "notifications")
        if refusal is not None:
            return refusal
        query = request.query
        types = query.getall("types[]", [])
        try:
            limit = max(1, min(80, int(query.get("limit", "40"))))
            bounds = {k: int(query[k]) for k in ("since_id", "min_id", "max_id") if k in query}
        except ValueError:
            return _json({"error": "Invalid parameter"}, 422)
        if types and "follow" not in types:
            return _json([])
        items = hub.notifications.get(account_id, [])
        low = max(bounds.get("since_id", 0), bounds.get("min_id", 0))
        chosen = [(i, b) for i, b in items if i > low and i < bounds.get("max_id", 1 << 62)]
        # min_id: the oldest right after it; otherwise the newest
        chosen = chosen[:limit] if "min_id" in bounds else chosen[-limit:]
        chosen.reverse()  # newest first, as Mastodon lists
        headers = {}
        if chosen:
            base = f"http://{request.host}{request.path}?types%5B%5D=follow&limit={limit}"
            headers["Link"] = (
                f'<{base}&max_id={chosen[-1][0]}>; rel="next", '
                f'<{base}&min_id={chosen[0][0]}>; rel="prev"'
            )
        body = "[" + ",".join(b for _, b in chosen) + "]"
        return web.Response(text=body, content_type="application/json", headers=headers)

    return handle


def _x_bearer(request: web.Request) -> web.Response | None:
    word, _, token = request.headers.get("Authorization", "").partition(" ")
    if word.lower() != "bearer" or not token.strip():
        return _json(
            {
                "title": "Unauthorized",
                "type": "about:blank",
                "status": 401,
                "detail": "Unauthorized",
            },
            401,
        )
    return None


def _x_subscriptions(hub: PushHub):
    async def handle(request: web.Request) -> web.Response:
        refusal = _x_bearer(request)
        if refusal is not None:
            return refusal
        if request.method == "GET":
            listed = list(hub.subscriptions.values())
            return _json({"data": listed, "meta": {"total_subscriptions": len(listed)}})
        if request.method != "POST":
            return _json({"title": "Method Not Allowed", "status": 405}, 405)
        try:
            body = await request.json()
            event_type = body["event_type"]
            user_id = str(body["filter"]["user_id"])
        except (ValueError, KeyError, TypeError):
            return _json(
                {
                    "title": "Invalid Request",
                    "detail": "event_type and filter.user_id are required",
                },
                400,
            )
        if event_type not in ("follow.follow", "follow.unfollow", "profile.update.bio"):
            return _json({"title": "Invalid Request", "detail": "unknown event_type"}, 400)
        existing = hub._subscription_for(user_id, event_type)
        if existing is not None:
            return _json(
                {
                    "errors": [
                        {"title": "DuplicateSubscription", "detail": existing["subscription_id"]}
                    ]
                },
                409,
            )
        hub.subscription_seq += 1
        now = iso(hub.sim.clock())
        subscription = {
            "subscription_id": str(hub.subscription_seq),
            "event_type": event_type,
            "filter": {"user_id": user_id},
            "tag": str(body.get("tag") or ""),
            "created_at": now,
            "updated_at": now,
        }
        hub.subscriptions[subscription["subscription_id"]] = subscription
        return _json(
            {"data": [subscription], "meta": {"total_subscriptions": len(hub.subscriptions)}}
        )

    return handle


def _x_unsubscribe(hub: PushHub):
    async def handle(request: web.Request) -> web.Response:
        refusal = _x_bearer(request)
        if refusal is not None:
            return refusal
        if hub.subscriptions.pop(request.match_info["subscription_id"], None) is None:
            return _json({"title": "Not Found Error", "status": 404}, 404)
        return _json(
            {"data": {"deleted": True}, "meta": {"total_subscriptions": len(hub.subscriptions)}}
        )

    return handle


def _x_stream(hub: PushHub):
    async def handle(request: web.Request) -> web.StreamResponse:
        refusal = _x_bearer(request)
        if refusal is not None:
            return refusal
        now = hub.sim.clock()
        try:
            backfill = int(request.query.get("backfill_minutes", "0"))
            start = request.query.get("start_time")
            since = _parse_iso(start) if start else now - backfill * 60
        except ValueError:
            backfill, since = -1, now
        if not 0 <= backfill <= 5 or not now - X_BACKFILL_S <= since <= now + 1:
            return _json(
                {
                    "title": "Invalid Request",
                    "detail": "backfill_minutes: 0 to 5; start_time: within the last 5 minutes",
                },
                400,
            )
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        replay = [line for t, line in hub.x_events if (backfill or start) and t >= since]
        listener = Listener("twitter")
        hub.listeners.add(listener)
        usage = hub.sim.stats.usage["twitter"]
        try:
            for line in replay:
                usage.resources += 1  # billed per event delivered, backfill too
                await response.write(line.encode() + b"\r\n")
            keepalive_at = hub.sim.clock() + X_KEEPALIVE_S
            while True:
                try:
                    item = await asyncio.wait_for(listener.queue.get(), GONE_CHECK_S)
                except TimeoutError:
                    if _gone(request):
                        break
                    if hub.sim.clock() >= keepalive_at:
                        await response.write(b"\r\n")
                        keepalive_at = hub.sim.clock() + X_KEEPALIVE_S
                    continue
                if item is _CUT:
                    if request.transport is not None:
                        request.transport.abort()
                    break
                usage.resources += 1
                await response.write(item.encode() + b"\r\n")
        except (ConnectionResetError, RuntimeError):
            pass
        finally:
            hub.listeners.discard(listener)
        return response

    return handle
