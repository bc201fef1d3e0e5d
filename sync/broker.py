"""The Redis broker transport, with one fault of kombu's made harmless.

When a worker's broker connection breaks, Celery closes it; kombu's Redis
channel then drops its connection pool and *afterwards* tries to give back
the messages its worker had received but not acked (``restore_unacked``),
building a new pool from connection details that are already gone. That
raises ``AttributeError`` (``'NoneType' object has no attribute 'hostname'``),
which Celery counts as an unrecoverable error: the worker process exits.
It happens whenever unacked messages are held at the break, so most often
with a threads pool (many tasks in flight) on a busy machine: it was the
worker that "never resumed" after a Redis restart in the fault tests.

Nothing is lost by not giving them back there: they are still in the
broker's unacked hash, from which kombu restores them after the visibility
timeout, and the stall sweep (``sync.recovery``) re-sends their pages
sooner (pages are idempotent). So a failed give-back is logged and the
worker goes on reconnecting.

Used by ``service.celery_app`` for ``redis://`` brokers (``broker_transport``).
"""
from __future__ import annotations

import logging

from kombu.transport import redis as kombu_redis

log = logging.getLogger("netsync.broker")


class QoS(kombu_redis.QoS):
    def restore_unacked(self, client=None):
        try:
            return super().restore_unacked(client)
        except Exception as exc:  # noqa: BLE001 - any failure here would end the worker
            log.warning("could not give back %d unacked messages on a broken connection (%s): "
                        "they wait in the broker's unacked set (visibility timeout) and the "
                        "stall sweep re-sends their pages", len(self._delivered),
                        type(exc).__name__)
            self._delivered.clear()
            return None


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel


#: the value of Celery's ``broker_transport`` for a Redis broker
TRANSPORT = f"{__name__}:Transport"
