"""Bluesky: one Jetstream connection for every linked Bluesky account.

A follow record lives in the follower's repository, so ``wantedDids`` (a
filter on repositories) would show only our users' own follows and hide who
follows them: the connection asks for ``app.bsky.graph.follow`` network-wide
and keeps the creates whose follower or subject is one of our users. A delete
names only (follower, record key): the subject comes from the map this
channel keeps of the follow records it has seen (``StreamState.remember_follow``).
A delete of one of our users' own follows that the map does not know (made
before the channel ran) cannot be named: that user's networks are marked for a
full sync instead.

Resumes from the largest ``time_us`` applied, rewound ``STREAMS_REWIND_SECONDS``
(Jetstream's time stamps are per-server receive times, not ordered); a cursor
older than ``JETSTREAM_REPLAY_SECONDS`` cannot be replayed: every Bluesky
network is marked for a full sync and the channel starts live.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp

from providers import push
from state.networks import StreamChange
from sync.streams.guard import Backoff, FrameGuard, keep_reconnecting

log = logging.getLogger("netsync.streams.jetstream")

#: a batch is applied when it holds this many changes or its first is this old
FLUSH_CHANGES = 200
FLUSH_AFTER_S = 0.05
#: with only other frames arriving, the cursor is still saved this often
CURSOR_EVERY_S = 1.0


class JetstreamChannel:
    provider = "bluesky"

    def __init__(self, role):
        self.role = role
        self.settings = role.svc.settings
        self.state = role.state
        self.connected = asyncio.Event()

    async def run(self) -> None:
        await keep_reconnecting(self, self._connect, log, "jetstream")

    async def _connect(self, backoff: Backoff) -> None:
        await self._read(await self._resume_params(), backoff)

    async def _resume_params(self) -> list[tuple[str, str]]:
        params = [("wantedCollections", push.FOLLOW_COLLECTION)]
        cursor = await asyncio.to_thread(self.state.jetstream_cursor)
        if cursor is None:
            # the first start: from now on (the syncs read what came before); saved at
            # once, so a process killed before its first batch resumes from here too
            cursor = int(time.time() * 1_000_000)
            await asyncio.to_thread(self.state.save_jetstream_cursor, cursor)
            return params + [("cursor", str(cursor))]
        age = time.time() - cursor / 1e6
        if age > self.settings.jetstream_replay_seconds:
            marked = await asyncio.to_thread(self.role.svc.networks.mark_needs_full, "bluesky")
            self.role.count("stream_gaps", provider=self.provider)
            log.warning(
                "jetstream: cursor %.0fs old is beyond replay; %d Bluesky networks marked for a full sync",
                age,
                marked,
            )
            # from now on, and said so at once (a restart must not find the same gap again)
            now = int(time.time() * 1_000_000)
            await asyncio.to_thread(self.state.save_jetstream_cursor, now)
            return params + [("cursor", str(now))]
        rewound = cursor - int(self.settings.streams_rewind_seconds * 1_000_000)
        return params + [("cursor", str(max(1, rewound)))]

    async def _read(self, params, backoff: Backoff) -> None:
        guard = FrameGuard(self.settings.streams_max_events_per_second)
        async with self.role.session.ws_connect(
            self.settings.jetstream_url,
            params=params,
            heartbeat=30,
            max_msg_size=push.MAX_FRAME_BYTES,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5),
        ) as ws:
            log.info("jetstream: connected (resuming: %s)", any(k == "cursor" for k, _ in params))
            self.connected.set()
            backoff.reset()
            batch: list[StreamChange] = []
            newest = 0
            first_at = saved_at = time.monotonic()
            while True:
                wait = None
                if batch or newest:
                    wait = max(0.001, FLUSH_AFTER_S - (time.monotonic() - first_at))
                try:
                    message = await ws.receive(timeout=wait)
                except TimeoutError:
                    message = None
                if message is not None:
                    if message.type in (
                        aiohttp.WSMsgType.CLOSE,
                        aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.ERROR,
                        aiohttp.WSMsgType.CLOSING,
                    ):
                        await self._flush(batch, newest)
                        return
                    guard.frame()
                    if message.type != aiohttp.WSMsgType.TEXT:
                        guard.bad_frame()
                        continue
                    try:
                        frame = push.parse_jetstream(message.data)
                    except push.FrameError:
                        self.role.count("stream_bad_frames", provider=self.provider)
                        guard.bad_frame()
                        continue
                    if not batch and not newest:
                        first_at = time.monotonic()
                    newest = max(newest, frame.time_us)
                    if frame.event is not None:
                        batch += await self._changes(frame.event)
                due = time.monotonic() - first_at >= FLUSH_AFTER_S
                if (
                    len(batch) >= FLUSH_CHANGES
                    or (batch and due)
                    or (newest and time.monotonic() - saved_at >= CURSOR_EVERY_S)
                    or (newest and not batch and due)
                ):
                    await self._flush(batch, newest)
                    batch, newest = [], 0
                    saved_at = time.monotonic()

    async def _flush(self, batch, newest: int) -> None:
        if not batch and not newest:
            return
        state = self.state

        def done() -> None:
            if newest:
                state.save_jetstream_cursor(newest)

        await self.role.applier.submit(batch, done)

    async def _changes(self, event: push.FollowEvent) -> list[StreamChange]:
        """The network changes one follow event makes for our users (often none)."""
        ours = self.role.users_of("bluesky")
        follower_user = ours.get(event.follower)
        subject = event.subject
        if event.kind == "follow":
            if ours.get(subject) is None and follower_user is None:
                return []
            await asyncio.to_thread(self.state.remember_follow, event.follower, event.rkey, subject)
            kind = "added"
        else:
            subject = await asyncio.to_thread(self.state.follow_subject, event.follower, event.rkey)
            if subject is None:
                if follower_user is not None:  # our user unfollowed someone we cannot name
                    await asyncio.to_thread(
                        self.role.svc.networks.mark_needs_full, "bluesky", [follower_user]
                    )
                    self.role.count("stream_unnamed_deletes", provider=self.provider)
                return []
            # the map entry stays: a replayed delete (a rewound cursor) must still be
            # named, or it would look like an unfollow nobody can name
            kind = "removed"
        changes = []
        subject_user = ours.get(subject)
        if subject_user is not None:
            changes.append(
                StreamChange(
                    subject_user,
                    "bluesky",
                    "followers",
                    kind,
                    event.follower,
                    "",
                    f"jetstream:{event.key}:followers",
                )
            )
        if follower_user is not None:
            changes.append(
                StreamChange(
                    follower_user,
                    "bluesky",
                    "following",
                    kind,
                    subject,
                    "",
                    f"jetstream:{event.key}:following",
                )
            )
        return changes
