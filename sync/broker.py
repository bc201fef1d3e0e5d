"""The Redis broker transport, with one fault of kombu's made harmless.

When a worker's broker connection breaks, Celery closes it; kombu's Redis
channel then drops its connection pool and *afterwards* tries to give back
the messages its worker had received but not acked (``restore_unacked``),
building a new pool from connection details that are already gone. That
raises ``AttributeError`` (``'NoneType' object has no attribute 'hostname'``),
which Celery counts as an unrecoverable error: the worker process exits. A
task still running at the break fails the same way when it finishes and its
message is acked or rejected on the closed channel.
It happens whenever unacked messages are held at the break, so most often
with a threads pool (many tasks in flight) on a busy machine: it was the
worker that "never resumed" after a Redis restart in the fault tests.

Nothing is lost by not giving them back there: they are still in the
broker's unacked hash, from which kombu restores them after the visibility
timeout, and the scheduler hands their pages on sooner (``sync.lost_workers``:
an unacked message no live worker holds; the stall sweep, ``sync.recovery``,
behind it) (pages are idempotent; an acked page delivered again is a no-op). So
on a closed channel a failed give-back, ack or reject is logged and the
worker goes on reconnecting; on an open one every error is raised as before.

Used by ``service.celery_app`` for ``redis://`` brokers (``broker_transport``).
"""

from __future__ import annotations

import logging

from kombu.transport import redis as kombu_redis

log = logging.getLogger("netsync.broker")


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS; on a channel already closed (its connection broken), a
    failed give-back, ack or reject is logged instead of raised."""

    def _closed_channel_failed(self, what: str, exc: Exception, count: int = 1) -> None:
        if not self.channel.closed:
            raise exc
        log.warning(
            "could not %s %d message(s) on a broken broker connection (%s): they wait "
            "in the broker's unacked set, where the scheduler finds them unheld and "
            "hands their pages on",
            what,
            count,
            type(exc).__name__,
        )

    def restore_unacked(self, client=None):
        try:
            return super().restore_unacked(client)
        except Exception as exc:  # noqa: BLE001 - any failure here would end the worker
            self._closed_channel_failed("give back", exc, len(self._delivered))
            self._delivered.clear()
            return None

    def ack(self, delivery_tag):
        try:
            super().ack(delivery_tag)
        except Exception as exc:  # noqa: BLE001 - a late task finishing after the close
            self._closed_channel_failed("ack", exc)

    def reject(self, delivery_tag, requeue=False):
        try:
            super().reject(delivery_tag, requeue=requeue)
        except Exception as exc:  # noqa: BLE001 - a late task finishing after the close
            self._closed_channel_failed("reject", exc)


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel


#: the value of Celery's ``broker_transport`` for a Redis broker
TRANSPORT = f"{__name__}:Transport"
