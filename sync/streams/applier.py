"""Pushed changes into PostgreSQL in batches, then the channels' cursors, then callbacks.

One ``Applier`` per process drains one queue: every channel submits a list of
``StreamChange``s with a ``done`` callback (the cursor it may now save). A
batch is one transaction (``NetworkStore.apply_stream_changes``); only after
it commits do the batch's ``done`` callbacks run, in submission order. A
failed transaction committed nothing and is retried with backoff: nothing is
applied twice (the events' identities) and no cursor passes an unapplied event.

Each user whose networks a batch changed gets one ``network.changed`` callback
after ``STREAMS_DEBOUNCE_SECONDS``, listing every network of theirs that changed
with its counts (a burst, across networks, is one callback); the counts wait in
Redis per network (``StreamState.note_changed``), so a process killed inside the
debounce leaves them for the next one to send (``resume_pending``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable

import psycopg

from state.networks import StreamChange
from state.outbox import Delivery
from sync.streams.guard import Backoff

log = logging.getLogger("netsync.streams")

#: the most changes one transaction applies (a burst is several batches)
MAX_BATCH = 500
#: submissions waiting for the applier; a channel waits when it is full (backpressure)
QUEUE_LIMIT = 10_000


class Applier:
    def __init__(self, svc, state, broker_url: str, max_batch: int = MAX_BATCH):
        self.svc = svc
        self.state = state
        self.broker_url = broker_url
        self.max_batch = max_batch
        self.queue: asyncio.Queue = asyncio.Queue(QUEUE_LIMIT)
        self.debounce_s = svc.settings.streams_debounce_seconds
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.applied = 0

    async def submit(self, changes: list[StreamChange], done: Callable[[], None] | None = None):
        """Queue ``changes``; ``done`` runs (in a thread) once they are committed."""
        await self.queue.put((changes, done))

    async def run(self) -> None:
        backoff = Backoff(base=0.2, cap=10.0)
        while True:
            items = [await self.queue.get()]
            size = len(items[0][0])
            while size < self.max_batch and not self.queue.empty():
                item = self.queue.get_nowait()
                items.append(item)
                size += len(item[0])
            changes = [change for item_changes, _ in items for change in item_changes]
            while True:
                try:
                    applied = await asyncio.to_thread(self._commit, changes, items)
                    backoff.reset()
                    break
                except Exception as exc:  # noqa: BLE001 - the database away: nothing committed, again
                    delay = backoff.next_delay()
                    log.warning(
                        "streams: applying %d changes failed (%s); again in %.1fs",
                        len(changes),
                        type(exc).__name__,
                        delay,
                    )
                    await asyncio.sleep(delay)
            self.applied += len(applied)
            self._debounce(applied)

    def _commit(self, changes: list[StreamChange], items) -> list[StreamChange]:
        try:
            applied = self.svc.networks.apply_stream_changes(changes) if changes else []
        except psycopg.DataError:
            # a value PostgreSQL refuses (a NUL byte in a handle an instance sent): the
            # batch again one change at a time, without the ones it refuses, rather
            # than retrying it for ever behind every other stream
            applied = []
            for change in changes:
                try:
                    applied += self.svc.networks.apply_stream_changes([change])
                except psycopg.DataError:
                    self.svc.metrics.count("stream_refused_changes", provider=change.provider)
                    log.warning("streams: a %s change refused by the database", change.provider)
        if applied:
            self.svc.metrics.count_many(
                [("stream_changes", {"provider": c.provider, "kind": c.kind}) for c in applied]
            )
            if self.svc.settings.callback_url:
                for network, (added, removed) in _tally(applied).items():
                    self.state.note_changed(network, added, removed)
        for _, done in items:
            if done is not None:
                done()
        return applied

    # -- the debounced network.changed callback -----------------------------------------
    def _debounce(self, applied: list[StreamChange]) -> None:
        if not self.svc.settings.callback_url:
            return
        for user_id in {_user_of(network) for network in _tally(applied)}:
            self._arm(user_id)

    def _arm(self, user_id: str) -> None:
        if user_id not in self._timers:
            loop = asyncio.get_running_loop()
            self._timers[user_id] = loop.call_later(
                self.debounce_s, lambda: asyncio.ensure_future(self._fire(user_id))
            )

    async def resume_pending(self) -> None:
        """Counts a killed process noted but never called back: send them after a debounce."""
        if self.svc.settings.callback_url:
            for network in await asyncio.to_thread(self.state.pending_changed):
                self._arm(_user_of(network))

    async def _fire(self, user_id: str) -> None:
        self._timers.pop(user_id, None)
        try:
            await asyncio.to_thread(self._send_changed, user_id)
        except Exception as exc:  # noqa: BLE001 - Redis away: the counts stay for the next
            log.warning("streams: network.changed not queued (%s)", type(exc).__name__)

    def _send_changed(self, user_id: str) -> None:
        from sync.callbacks import schedule

        changed = []
        for network in self.state.pending_changed():
            if _user_of(network) != user_id:
                continue
            added, removed = self.state.take_changed(network)
            if added or removed:
                provider, relation = network.rsplit("|", 2)[1:]
                changed.append(
                    {"provider": provider, "relation": relation, "added": added, "removed": removed}
                )
        if not changed:
            return
        body = {
            "event": "network.changed",
            "user_id": user_id,
            "networks": changed,
            "source": "stream",
        }
        delivery = Delivery(
            id=f"stream.{uuid.uuid4().hex}",
            event="network.changed",
            sync_id="",
            # the queue the delivery rides (its provider's region): the first network's
            provider=changed[0]["provider"],
            created_at=time.time(),
            body=json.dumps(body, separators=(",", ":")),
        )
        if self.svc.outbox.add(delivery):
            schedule(self.svc, delivery, 0.0, self.broker_url)


def _user_of(network: str) -> str:
    """``user|provider|relation`` → user (a user id may hold "|": providers never do)."""
    return network.rsplit("|", 2)[0]


def _tally(changes: list[StreamChange]) -> dict[str, tuple[int, int]]:
    counts: dict[str, list[int]] = {}
    for change in changes:
        network = f"{change.user_id}|{change.provider}|{change.relation}"
        entry = counts.setdefault(network, [0, 0])
        entry[0 if change.kind == "added" else 1] += 1
    return {network: (a, r) for network, (a, r) in counts.items()}
