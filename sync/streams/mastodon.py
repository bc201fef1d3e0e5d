"""Mastodon: one user notification stream per linked account, on its instance.

The stream's URL is the one the instance announces (``GET /api/v2/instance``,
``configuration.urls.streaming``; often another host or port), with the
user's token in the ``Authorization`` header (never in a URL, never logged).
``follow`` notifications are adds to the account's followers; Mastodon pushes
no unfollows (full syncs find those).

After every (re)connect the gap is filled from the REST list,
``GET /api/v1/notifications?types[]=follow&min_id=<last applied>``, paging
forward by ``rel="prev"`` (``min_id``: the notifications right after it, so
a gap of any length is read whole). The stream is opened first, so nothing
falls between the fill and the stream; what both deliver is applied once (the
notification id is the event's identity).

The account's instance is the one its credential names (``Credential.instance``,
from the login), else ``MASTODON_API_URL``: the token is read with the instance
from the same stored object, so it only ever goes to the instance it was given
for. A user's instance is called through the guarded session
(``sync.streams.guarded``: public addresses only, at every connection), and the
streaming URL it announces must pass ``egress.check_instance_url`` (https,
public, or an exact ``OUTBOUND_ALLOW_PRIVATE`` host:port; it may be another
host, as ``wss://streaming.<domain>`` often is); a refused one is counted
(``stream_urls_refused``) and nothing is sent to it. The operator's instance
and what it announces are trusted.
"""

from __future__ import annotations

import asyncio
import logging
import random

import aiohttp

from providers import push
from providers.pagination import parse_link_header
from state.credentials import CredentialError
from state.networks import StreamChange
from sync import egress
from sync.streams import guarded
from sync.streams.guard import (
    CONNECTION_ERRORS,
    Backoff,
    FrameGuard,
    StreamCut,
    keep_reconnecting,
)

log = logging.getLogger("netsync.streams.mastodon")

#: Mastodon beats every 15 s: a stream silent four times that long is dead
READ_TIMEOUT_S = 60.0
#: a refused token: look again this much later (the user may log in again)
REFUSED_RETRY_S = 300.0
PAGE = 80


class MastodonStream:
    provider = "mastodon"

    def __init__(
        self, role, uid: str, user_id: str, default_url: str, linked_instance: str | None = None
    ):
        self.role = role
        self.uid = uid
        self.user_id = user_id
        #: the instance this account was linked on (``linked_accounts.instance``)
        self.linked_instance = linked_instance
        #: the operator's instance (``MASTODON_API_URL``): an account without its own
        self.default_url = default_url.rstrip("/")
        #: the account's instance, as its credential says at each (re)connect
        self.base_url = self.default_url
        self.session = role.session
        self.connected = asyncio.Event()

    @property
    def account_key(self) -> str:
        """The account's key in the cursor hash and its events' identities, unique
        across instances (the operator's instance keeps the key it always had)."""
        return f"{self.base_url}|{self.uid}"

    async def run(self) -> None:
        # thousands of these per process: their reconnects are not warnings
        await keep_reconnecting(
            self,
            self._stream,
            log,
            f"mastodon stream of user {self.user_id}",
            errors=(*CONNECTION_ERRORS, _Refused, push.FrameError, ValueError),
            interpret=self._refusal,
            level=logging.INFO,
        )

    def _refusal(self, exc: BaseException) -> tuple[str, float] | None:
        """A refused token or instance waits long (the user may log in again), not the
        backoff's seconds; a connection the address guard refused is counted too."""
        if isinstance(exc, _Refused):
            reason = exc.reason
        elif isinstance(exc, egress.InstanceNotAllowed):
            reason = egress.NOT_ALLOWED
        elif isinstance(exc, aiohttp.ClientConnectionError) and guarded.refused_by_guard(exc):
            self.role.count("stream_urls_refused", provider=self.provider, at="connect")
            reason = egress.NOT_ALLOWED
        else:
            return None
        return reason, REFUSED_RETRY_S * (0.5 + random.random())

    async def _token(self) -> str:
        """The account's token; ``base_url`` and ``session`` become its instance's."""
        try:
            credential = await asyncio.to_thread(
                self.role.svc.credentials.load, "mastodon", self.user_id
            )
        except CredentialError:
            raise _Refused("no_credential") from None
        if credential.instance:
            try:
                base = await self.role.check_user_url(credential.instance, "instance")
            except egress.InstanceNotAllowed:
                self.role.count("stream_urls_refused", provider=self.provider, at="instance")
                raise
            self.base_url, self.session = base.rstrip("/"), self.role.guarded_session
        else:
            self.base_url, self.session = self.default_url, self.role.session
        if self.linked_instance and egress.instance_name(self.base_url) != self.linked_instance:
            # the user logged in on another instance since: this account id is the old
            # instance's, and its stream is the new row's (one stream per credential)
            raise _Refused("instance_moved")
        return credential.access_token

    async def _stream(self, backoff: Backoff) -> None:
        headers = {"Authorization": f"Bearer {await self._token()}"}
        user_supplied = self.session is not self.role.session
        try:
            url = await self.role.mastodon_streaming_url(self.base_url, user_supplied)
        except egress.InstanceNotAllowed:
            self.role.count("stream_urls_refused", provider=self.provider, at="streaming_url")
            raise
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=READ_TIMEOUT_S)
        async with self.session.get(
            url, headers=headers, timeout=timeout, allow_redirects=False
        ) as response:
            if response.status in (401, 403):
                raise _Refused(f"token_refused_{response.status}")
            if response.status != 200:
                raise StreamCut(f"http_{response.status}")
            backoff.reset()
            self.connected.set()
            await self._fill_gap(headers)
            parser = push.SseParser()
            guard = FrameGuard(self.role.settings.streams_max_events_per_second)
            async for raw in response.content:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                ended = parser.feed_line(line)
                if ended is None:
                    continue
                guard.frame()
                name, data = ended
                if name != "notification":
                    continue
                try:
                    follow = push.parse_mastodon_notification(data)
                except push.FrameError:
                    self.role.count("stream_bad_frames", provider=self.provider)
                    guard.bad_frame()
                    continue
                if follow is not None:
                    await self._apply([follow])

    async def _fill_gap(self, headers: dict) -> None:
        since = await asyncio.to_thread(self.role.state.mastodon_since, self.account_key)
        url = f"{self.base_url}/api/v1/notifications"
        if since is None:
            # the first stream of this account: what came before is the syncs' to read;
            # remember the newest so a later gap is measured from here
            items, _ = await self._get(url, {"types[]": "follow", "limit": "1"}, headers)
            newest = str(items[0].get("id", "")) if items else ""
            # none yet: "0", so the next fill reads every follow notification there will be
            # (another process may hold this stream next, and must not baseline again)
            await asyncio.to_thread(
                self.role.state.save_mastodon_since,
                self.account_key,
                newest if newest.isdigit() else "0",
            )
            return
        params: dict | None = {"types[]": "follow", "min_id": since, "limit": str(PAGE)}
        while url:
            items, links = await self._get(url, params, headers)
            if not items:
                return
            follows = [push.parse_mastodon_notification(item) for item in items]
            # newest first on the page: apply oldest first, so the cursor only climbs
            found = [f for f in reversed(follows) if f is not None]
            newest = max((str(item.get("id")) for item in items), key=push.notification_id_order)
            await self._apply(found, newest)
            self.role.count("stream_gap_fills", provider=self.provider)
            url, params = links.get("prev"), None
            if url and not url.startswith(self.base_url):
                return  # a link off the instance's origin is not followed

    async def _get(self, url: str, params, headers: dict):
        timeout = aiohttp.ClientTimeout(total=30)
        async with self.session.get(
            url, params=params, headers=headers, timeout=timeout, allow_redirects=False
        ) as response:
            if response.status in (401, 403):
                raise _Refused(f"token_refused_{response.status}")
            if response.status != 200:
                raise StreamCut(f"notifications_http_{response.status}")
            body = await response.json(content_type=None)
            if not isinstance(body, list):
                raise push.FrameError("notifications: not a list")
            return body, parse_link_header(response.headers.get("Link", ""))

    async def _apply(self, follows: list[push.MastodonFollow], newest: str | None = None):
        changes = [
            StreamChange(
                self.user_id,
                "mastodon",
                "followers",
                "added",
                follow.follower,
                follow.follower_acct,
                f"mastodon:{self.account_key}:{follow.notification_id}",
            )
            for follow in follows
        ]
        ids = [f.notification_id for f in follows] + ([newest] if newest else [])
        if not ids:
            return
        last = max(ids, key=push.notification_id_order)
        state, key = self.role.state, self.account_key

        def done() -> None:
            current = state.mastodon_since(key)
            if current is None or push.notification_id_order(last) > push.notification_id_order(
                current
            ):
                state.save_mastodon_since(key, last)

        await self.role.applier.submit(changes, done)


class _Refused(Exception):
    """The instance refused the token (or none is stored): wait long, not in a tight loop."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
