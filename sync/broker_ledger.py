"""What kombu's Redis transport holds: the queued messages and the unacked ones, read back.

The Redis broker keeps a queue as one list per priority step (``normal``,
``normal:1`` … ``normal:9``, ``service.celery_app.broker_transport_options``)
and a message a worker has taken, until its ack, in the ``unacked`` hash
(delivery tag → [message, exchange, routing key]) with its time in
``unacked_index``. Two things can go wrong across hosts, and this module lets
the scheduler (``sync.lost_workers``) see them:

- a lost worker's unacked messages stay in that hash until the visibility
  timeout, then come back as no-ops if their sync is done: ``forget`` drops
  them once their pages were handed on;
- a message can be lost by the broker at a partition: BRPOP pops it for a
  worker whose link was just cut, the reply never arrives, and it is neither
  queued nor unacked. ``pages_of`` finds what the broker still has of a sync,
  so that a page pending in the store and nowhere in the broker is known lost.

A message is read only as far as netsync's own tasks go (``<provider>.page``
/ ``.profile``, Celery's protocol 2: headers name the task, the body is
``[args, kwargs, embed]``); anything else is left alone.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger("netsync.broker_ledger")

#: kombu's Redis transport's key names (``kombu.transport.redis.Channel``)
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"
#: a queue longer than this is not read through (the lost-message check then waits
#: for the stall sweep): reading it would cost the scheduler more than it saves
MAX_SCAN = 50_000
SCAN_CHUNK = 1000


@dataclass(frozen=True)
class BrokerMessage:
    """One of netsync's task messages as the broker holds it."""

    task: str
    sync_id: str
    #: the page's cursor; "" for round one (``.profile``) or a finalization
    cursor: str


def read_message(raw) -> BrokerMessage | None:
    """A kombu message (the JSON the transport stores) → what it asks for, or None."""
    try:
        message = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
        task = message["headers"]["task"]
        if not task.endswith((".page", ".profile")):
            return None
        body = message["body"]
        if (message.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return BrokerMessage(task, str(args[0]), str(args[1]) if len(args) > 1 else "")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


class RedisBrokerLedger:
    """The queues and the unacked set of one Redis broker (its own client)."""

    def __init__(
        self,
        client,
        queue_names: Iterable[str],
        *,
        sep: str = ":",
        priority_steps: Iterable[int] = range(10),
        key_prefix: str = "",
        max_scan: int = MAX_SCAN,
    ):
        self.redis = client
        self.prefix = key_prefix
        steps = list(priority_steps)
        #: queue name → its lists, one per priority step (as kombu names them)
        self.queue_lists = {
            name: [
                f"{key_prefix}{name}{sep}{step}" if step else f"{key_prefix}{name}"
                for step in steps
            ]
            for name in queue_names
        }
        self.lists = [key for keys in self.queue_lists.values() for key in keys]
        self.unacked_key = f"{key_prefix}{UNACKED}"
        self.unacked_index_key = f"{key_prefix}{UNACKED_INDEX}"
        self.max_scan = max_scan

    def unacked(self) -> dict[str, BrokerMessage]:
        """Delivery tag → message, for every netsync message taken and not acked."""
        found = {}
        for tag, raw in self.redis.hscan_iter(self.unacked_key, count=500):
            try:
                message = read_message(json.loads(raw)[0])
            except (ValueError, IndexError, TypeError):
                message = None
            if message is not None:
                found[_text(tag)] = message
        return found

    def pages_of(
        self, sync_ids: Iterable[str], queue_names: Iterable[str] | None = None
    ) -> set[tuple[str, str]] | None:
        """(sync id, cursor) of every message of these syncs queued in ``queue_names``
        (default: every queue); None when they are too long to read through."""
        wanted = {sync_id.encode() for sync_id in sync_ids}
        if not wanted:
            return set()
        names = self.queue_lists if queue_names is None else queue_names
        lists = [key for name in names for key in self.queue_lists.get(name, [])]
        with self.redis.pipeline(transaction=False) as pipe:
            for key in lists:
                pipe.llen(key)
            lengths = pipe.execute()
        if sum(lengths) > self.max_scan:
            log.info("broker queues hold %d messages: not read through", sum(lengths))
            return None
        found = set()
        for key, length in zip(lists, lengths):
            for start in range(0, length, SCAN_CHUNK):
                for raw in self.redis.lrange(key, start, start + SCAN_CHUNK - 1):
                    # argsrepr in the headers carries the sync id in clear: parse only those
                    if any(sync_id in raw for sync_id in wanted):
                        message = read_message(raw)
                        if message is not None:
                            found.add((message.sync_id, message.cursor))
        return found

    def forget(self, tags: Iterable[str]) -> int:
        """Drop messages from the unacked set (their pages were handed on, or their sync
        is over): they would come back after the visibility timeout only to do nothing."""
        tags = [tag for tag in tags if tag]
        if not tags:
            return 0
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hdel(self.unacked_key, *tags)
            pipe.zrem(self.unacked_index_key, *tags)
            removed, _ = pipe.execute()
        return int(removed)


class AmqpBrokerLedger:
    """What can be seen of RabbitMQ from outside a consumer: how many messages each
    queue has ready. A message delivered to a consumer whose link was cut stays unacked
    on that dead connection until RabbitMQ's heartbeat timeout; nobody else can see
    it. So the only answer here is "nothing of these syncs is queued" when their queues
    hold nothing ready at all (then a pending page no live worker holds was delivered
    into the void), and "can't tell" otherwise."""

    def __init__(self, broker_url: str):
        self.broker_url = broker_url

    def unacked(self) -> dict[str, BrokerMessage]:
        return {}  # another connection's unacked messages are invisible

    def forget(self, tags: Iterable[str]) -> int:
        return 0  # RabbitMQ requeues a dead connection's messages itself

    def pages_of(
        self, sync_ids: Iterable[str], queue_names: Iterable[str] | None = None
    ) -> set[tuple[str, str]] | None:
        from kombu import Connection

        if queue_names is None:
            return None
        with Connection(self.broker_url, connect_timeout=5) as conn:
            channel = conn.channel()
            for name in queue_names:
                try:
                    _, ready, _ = channel.queue_declare(queue=name, passive=True)
                except Exception:  # noqa: BLE001 - no such queue: nothing in it
                    channel = conn.channel()
                    continue
                if ready:
                    return None
        return set()


def ledger_for(broker_url: str, transport_options: dict, queue_names: Iterable[str]):
    """The ledger of the broker at ``broker_url``: kombu's Redis transport's keys read
    back, or what RabbitMQ tells of its queues (``amqp://``, ``pyamqp://``)."""
    if broker_url.startswith(("amqp://", "pyamqp://", "amqps://")):
        return AmqpBrokerLedger(broker_url)
    if not broker_url.startswith("redis://"):
        return None
    import redis

    client = redis.Redis.from_url(broker_url, socket_timeout=10, socket_connect_timeout=5)
    return RedisBrokerLedger(
        client,
        queue_names,
        sep=transport_options.get("sep", ":"),
        priority_steps=transport_options.get("priority_steps", range(10)),
        key_prefix=transport_options.get("global_keyprefix", ""),
    )


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
