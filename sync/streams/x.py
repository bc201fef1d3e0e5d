"""X: Activity API subscriptions for every linked X account, and one stream.

Each linked X account gets a ``follow.follow`` and a ``follow.unfollow``
subscription (``POST /2/activity/subscriptions``, filter ``user_id``); an
account no longer linked has them deleted. The ids are kept in Redis
(``StreamState.x_subscriptions``). The events arrive on one stream
(``GET /2/activity/stream``, one JSON object per line, blank keep-alive lines).
An event fires for the filtered user both when they follow and when they
are followed: the direction is which side of the payload they are.

X bills every event delivered (``PRICE_TWITTER``): each is counted against
the day's ``BUDGET_TWITTER`` as it arrives; a spent budget closes the stream
until the next UTC day and marks the X networks for a full sync (what was
not delivered is not seen).

Resuming: the stream replays from ``start_time`` (at most 5 minutes back, X's
``backfill_minutes`` reach), just before the last event applied; after a
longer outage the X networks are marked for a full sync.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time

import aiohttp

from providers import push
from state.networks import StreamChange
from state.spend import SpendBook, next_utc_midnight
from sync.streams.guard import Backoff, FrameGuard, StreamCut, keep_reconnecting

log = logging.getLogger("netsync.streams.x")

EVENT_TYPES = ("follow.follow", "follow.unfollow")
#: X's documented backfill reach
BACKFILL_S = 5 * 60.0
#: X sends a keep-alive every 20 s
READ_TIMEOUT_S = 60.0
SUBSCRIPTIONS_EVERY_S = 5.0
#: the backfill starts this long before the last delivery applied (clock skew)
REPLAY_MARGIN_S = 2.0


def _iso(moment: float) -> str:
    stamp = datetime.datetime.fromtimestamp(moment, datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _budget_spent(exc: BaseException) -> tuple[str, float] | None:
    """A stream closed for the spend budget opens again when the next UTC day begins."""
    if isinstance(exc, StreamCut) and exc.reason == "budget":
        return "budget", max(1.0, next_utc_midnight(time.time()) - time.time())
    return None


class XChannel:
    provider = "twitter"

    def __init__(self, role):
        self.role = role
        self.settings = role.svc.settings
        self.state = role.state
        self.base = self.settings.api_url("twitter")
        self.headers = {"Authorization": f"Bearer {self.settings.twitter_activity_token}"}
        gate = role.svc.gate
        self.spend = (
            gate.spend
            if gate is not None
            else SpendBook(role.svc.redis, self.settings.key_prefix, ledger=role.svc.ledger)
        )
        self.connected = asyncio.Event()

    async def run(self) -> None:
        keeper = asyncio.ensure_future(self._keep_subscriptions())
        try:
            await keep_reconnecting(self, self._stream, log, "x", interpret=_budget_spent)
        finally:
            keeper.cancel()

    # -- subscriptions ----------------------------------------------------------------
    async def _keep_subscriptions(self) -> None:
        while True:
            try:
                await self.sync_subscriptions()
            except (aiohttp.ClientError, TimeoutError, OSError, push.FrameError) as exc:
                log.warning("x: subscriptions not in step (%s)", type(exc).__name__)
            await asyncio.sleep(SUBSCRIPTIONS_EVERY_S)

    async def sync_subscriptions(self) -> None:
        linked = self.role.users_of("twitter")
        held = await asyncio.to_thread(self.state.x_subscriptions)
        for uid in sorted(set(linked) - set(held)):
            ids = [await self._subscribe(uid, event_type) for event_type in EVENT_TYPES]
            await asyncio.to_thread(
                self.state.save_x_subscription, uid, {"user": linked[uid], "ids": ids}
            )
            log.info("x: subscribed user %s", linked[uid])
        for uid in sorted(set(held) - set(linked)):
            for subscription_id in held[uid].get("ids", []):
                await self._request(
                    "DELETE", f"/2/activity/subscriptions/{subscription_id}", ok=(200, 404)
                )
            await asyncio.to_thread(self.state.drop_x_subscription, uid)

    async def _subscribe(self, uid: str, event_type: str) -> str:
        body = {"event_type": event_type, "filter": {"user_id": uid}, "tag": "netsync"}
        answer = await self._request(
            "POST", "/2/activity/subscriptions", json=body, ok=(200, 201, 409)
        )
        if "errors" in answer and "data" not in answer:  # already subscribed: find it
            listed = await self._request("GET", "/2/activity/subscriptions", ok=(200,))
            for item in push.x_subscriptions(listed):
                if (
                    item.get("event_type") == event_type
                    and (item.get("filter") or {}).get("user_id") == uid
                ):
                    return str(item["subscription_id"])
            raise push.FrameError("x: subscription reported as duplicate but not listed")
        return push.x_subscription_id(answer)

    async def _request(self, method: str, path: str, ok: tuple, **kwargs) -> dict:
        async with self.role.session.request(
            method,
            self.base + path,
            headers=self.headers,
            timeout=aiohttp.ClientTimeout(total=30),
            **kwargs,
        ) as response:
            if response.status not in ok:
                raise push.FrameError(f"x: {method} subscriptions answered {response.status}")
            body = await response.json(content_type=None)
            return body if isinstance(body, dict) else {}

    # -- the stream --------------------------------------------------------------------
    async def _stream(self, backoff: Backoff) -> None:
        if self._over_budget():
            raise StreamCut("budget")
        params = {"backfill_minutes": "0"}
        last = await asyncio.to_thread(self.state.x_last)
        if last is None:  # the first start: a restart backfills from here
            await asyncio.to_thread(self.state.save_x_last, time.time())
        else:
            gap = time.time() - last
            if gap > BACKFILL_S:
                marked = await asyncio.to_thread(self.role.svc.networks.mark_needs_full, "twitter")
                self.role.count("stream_gaps", provider=self.provider)
                log.warning(
                    "x: %.0fs beyond backfill; %d X networks marked for a full sync", gap, marked
                )
            else:
                # from just before the last delivery, not whole minutes: X bills every
                # event it delivers again
                since = max(last - REPLAY_MARGIN_S, time.time() - BACKFILL_S + 1)
                params = {"start_time": _iso(since)}
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=READ_TIMEOUT_S)
        async with self.role.session.get(
            self.base + "/2/activity/stream", params=params, headers=self.headers, timeout=timeout
        ) as response:
            if response.status != 200:
                raise StreamCut(f"http_{response.status}")
            backoff.reset()
            self.connected.set()
            guard = FrameGuard(self.settings.streams_max_events_per_second)
            async for raw in response.content:
                guard.frame()
                line = raw.strip()
                now = time.time()
                if not line:  # keep-alive: nothing was missed up to now
                    await self.role.applier.submit([], lambda now=now: self.state.save_x_last(now))
                    continue
                try:
                    activity = push.parse_x_activity(line)
                except push.FrameError:
                    self.role.count("stream_bad_frames", provider=self.provider)
                    guard.bad_frame()
                    continue
                if activity is None:
                    continue
                await asyncio.to_thread(self._bill)
                changes = self._changes(activity)
                await self.role.applier.submit(changes, lambda now=now: self.state.save_x_last(now))
                if self._over_budget():
                    marked = await asyncio.to_thread(
                        self.role.svc.networks.mark_needs_full, "twitter"
                    )
                    log.warning(
                        "x: BUDGET_TWITTER spent; stream closed, %d networks marked", marked
                    )
                    raise StreamCut("budget")

    def _bill(self) -> None:
        price = self.settings.spend.price("twitter")
        self.spend.settle(None, "twitter", price, counted=False, resources=1)

    def _over_budget(self) -> bool:
        budget = self.settings.spend.budget("twitter")
        if budget is None:
            return False
        return self.spend.totals("twitter").spent_usd >= budget

    def _changes(self, activity: push.XActivity) -> list[StreamChange]:
        user_id = self.role.users_of("twitter").get(activity.filtered_user)
        event = activity.event
        if user_id is None:
            return []
        kind = "added" if event.kind == "follow" else "removed"
        if event.subject == activity.filtered_user:
            relation, other, handle = "followers", event.follower, event.follower_handle
        elif event.follower == activity.filtered_user:
            relation, other, handle = "following", event.subject, event.subject_handle
        else:
            return []
        return [StreamChange(user_id, "twitter", relation, kind, other, handle, f"x:{event.key}")]
