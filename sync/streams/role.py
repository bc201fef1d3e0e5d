"""The ``streams`` process: who is linked, which channels this process holds, and their tasks.

Every ``ROUND_S`` the role reads the linked accounts of the ``STREAMS``
providers from PostgreSQL, renews its membership and leases in Redis, and
starts or stops channel tasks to match:

- ``streams:jetstream`` and ``streams:x``: one holder each (the other
  processes stand by and take over when a lease lapses, ``LEASE_S``);
- ``streams:mastodon:<shard>``: each linked Mastodon account falls in one of
  ``streams_shards`` shards (by its stable id); each process holds at most its
  fair share (shards ÷ live processes, rounded up) and lets go of the rest, so
  a second process takes half within a few rounds.

A lease says who *should* read a channel; the events' identities in
PostgreSQL are what guarantee that nothing is applied twice, even while two
processes overlap during a hand-over.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import socket
import zlib

import aiohttp

from providers import push
from state.liveness import Liveness
from state.streams import StreamState
from sync import egress
from sync.streams.applier import Applier
from sync.streams.guarded import guarded_session
from sync.streams.jetstream import JetstreamChannel
from sync.streams.mastodon import MastodonStream
from sync.streams.x import XChannel

log = logging.getLogger("netsync.streams")

ROUND_S = 2.0
LEASE_S = 10.0


class StreamsRole:
    def __init__(self, svc, broker_url: str, member: str | None = None):
        self.svc = svc
        self.settings = svc.settings
        self.state = StreamState(svc.redis, self.settings.key_prefix)
        self.liveness = Liveness(svc.redis, self.settings.key_prefix)
        self.member = (
            member or f"streams-{os.getpid()}-{secrets.token_hex(3)}@{socket.gethostname()}"
        )
        self.applier = Applier(svc, self.state, broker_url)
        #: provider -> stable account id -> user id
        self.roster: dict[str, dict[str, str]] = {}
        self.tasks: dict[str, asyncio.Task] = {}
        self.channels: dict[str, object] = {}
        self.held: set[str] = set()
        self.session: aiohttp.ClientSession | None = None
        #: for hosts users supplied (their instance, the streaming URL it announced)
        self.guarded_session: aiohttp.ClientSession | None = None
        self._streaming_urls: dict[str, str] = {}

    # -- what the channels ask ---------------------------------------------------------
    def users_of(self, provider: str) -> dict[str, str]:
        return self.roster.get(provider, {})

    def count(self, name: str, **labels) -> None:
        try:
            self.svc.metrics.count(name, **labels)
        except Exception:  # noqa: BLE001 - metrics are best effort, never a reason to drop a stream
            log.debug("metric %s not counted", name)

    async def mastodon_streaming_url(self, base_url: str, user_supplied: bool = False) -> str:
        """The instance's notification stream URL (``GET /api/v2/instance``), cached.

        The operator's instance (``MASTODON_API_URL``) is trusted, with what it
        announces. A user's instance is asked through the guarded session, and
        the URL it announces (often another host: ``wss://streaming.<domain>``)
        must pass ``egress.check_instance_url`` as a login's instance does: https
        and public addresses only, or an exact ``OUTBOUND_ALLOW_PRIVATE`` host:port.
        Else ``egress.InstanceNotAllowed``: the token is not sent there.
        """
        url = self._streaming_urls.get(base_url)
        if url is None:
            session = self.guarded_session if user_supplied else self.session
            async with session.get(
                f"{base_url}/api/v2/instance",
                timeout=aiohttp.ClientTimeout(total=30),
                allow_redirects=False,
            ) as response:
                if response.status != 200:
                    raise push.FrameError(f"instance answered {response.status}")
                url = push.mastodon_streaming_url(await response.json(content_type=None))
            if user_supplied:
                await self.check_user_url(url, "the instance's streaming URL")
            self._streaming_urls[base_url] = url
        return url

    async def check_user_url(self, url: str, what: str) -> str:
        """``url`` checked by ``egress.check_instance_url`` (it resolves: in a thread)."""
        checked = await asyncio.to_thread(
            egress.check_instance_url, url, self.settings.outbound_allow_private, what=what
        )
        return checked.base_url

    # -- the loop ---------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=10),
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
        )
        self.guarded_session = guarded_session(self.settings.outbound_allow_private)
        applier = asyncio.ensure_future(self.applier.run())
        try:
            try:
                await self.applier.resume_pending()
            except Exception as exc:  # noqa: BLE001 - Redis away: the next change re-arms them
                log.warning("streams: pending callbacks not resumed (%s)", type(exc).__name__)
            log.info(
                "streams %s holding %s", self.member, ",".join(self.settings.streams) or "nothing"
            )
            while not stop.is_set():
                try:
                    await self.round()
                except Exception as exc:  # noqa: BLE001 - a store away: the next round tries again
                    log.warning("streams: round failed (%s)", type(exc).__name__)
                try:
                    await asyncio.wait_for(stop.wait(), ROUND_S)
                except TimeoutError:
                    pass
        finally:
            for task in self.tasks.values():
                task.cancel()
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            # let what was read be applied (and its cursors saved) before leaving
            try:
                await asyncio.wait_for(self._drain(), 10)
            except TimeoutError:
                pass
            applier.cancel()
            await self.session.close()
            await self.guarded_session.close()
            await asyncio.to_thread(self._leave)

    async def _drain(self) -> None:
        while not self.applier.queue.empty():
            await asyncio.sleep(0.05)

    def _leave(self) -> None:
        for name in self.held:
            self.liveness.give_up(name, self.member)
        self.state.leave(self.member)

    async def round(self) -> None:
        rows = await asyncio.to_thread(self.svc.networks.linked_accounts, self.settings.streams)
        roster: dict[str, dict[str, str]] = {}
        for provider, uid, user_id, _account_id, instance in rows:
            # a Mastodon id is unique on its instance only: keyed by both
            key = f"{instance}|{uid}" if provider == "mastodon" and instance else uid
            roster.setdefault(provider, {})[key] = user_id
        self.roster = roster
        wanted = await asyncio.to_thread(self._leases, roster)
        for name in set(self.tasks) - wanted:
            self.tasks.pop(name).cancel()
            self.channels.pop(name, None)
        for name in sorted(wanted - set(self.tasks)):
            channel = self._channel(name)
            self.channels[name] = channel
            self.tasks[name] = asyncio.ensure_future(channel.run())

    def _channel(self, name: str):
        if name == "jetstream":
            return JetstreamChannel(self)
        if name == "x":
            return XChannel(self)
        _, key = name.split(":", 1)
        instance, _, uid = key.rpartition("|")
        return MastodonStream(
            self,
            uid,
            self.roster["mastodon"][key],
            self.settings.api_url("mastodon"),
            linked_instance=instance or None,
        )

    def _leases(self, roster) -> set[str]:
        """Renew and take leases (in Redis); the channel names this process should run."""
        streams, wanted = self.settings.streams, set()
        members = self.state.join(self.member, LEASE_S)
        singles = {
            "jetstream": "bluesky" in streams and bool(roster.get("bluesky")),
            "x": "twitter" in streams
            and bool(roster.get("twitter"))
            and bool(self.settings.twitter_activity_token),
        }
        for name, needed in singles.items():
            lease = f"streams:{name}"
            if needed and self.liveness.lease(lease, self.member, LEASE_S):
                self.held.add(lease)
                wanted.add(name)
            elif lease in self.held:
                self.held.discard(lease)
                self.liveness.give_up(lease, self.member)
        accounts = roster.get("mastodon", {}) if "mastodon" in streams else {}
        shards = self.settings.streams_shards
        if not accounts:  # nothing to shard: hold no shard leases
            for lease in [h for h in self.held if h.startswith("streams:mastodon:")]:
                self.liveness.give_up(lease, self.member)
                self.held.discard(lease)
            return wanted
        fair = math.ceil(shards / max(1, members))
        mine = sorted(s for s in range(shards) if f"streams:mastodon:{s}" in self.held)
        for shard in mine[fair:]:  # more than a fair share: hand the rest over
            self.liveness.give_up(f"streams:mastodon:{shard}", self.member)
            self.held.discard(f"streams:mastodon:{shard}")
        for shard in range(shards):
            lease = f"streams:mastodon:{shard}"
            if lease in self.held:
                if not self.liveness.lease(lease, self.member, LEASE_S):
                    self.held.discard(lease)
            elif self._shards_held() < fair and self.liveness.lease(lease, self.member, LEASE_S):
                self.held.add(lease)
        for uid in accounts:
            if f"streams:mastodon:{shard_of(uid, shards)}" in self.held:
                wanted.add(f"mastodon:{uid}")
        return wanted

    def _shards_held(self) -> int:
        return sum(1 for lease in self.held if lease.startswith("streams:mastodon:"))


def shard_of(uid: str, shards: int) -> int:
    return zlib.crc32(uid.encode()) % shards
