"""The RabbitMQ the broker tests use, where one is reachable (``TEST_AMQP_URL``)."""

from __future__ import annotations

import os

from kombu import Connection

from devtools.devstack import delete_broker_queues

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def rabbitmq_reachable() -> bool:
    try:
        with Connection(AMQP_URL, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not here"
        return False


def delete_amqp_queues(names: list[str]) -> None:
    """Remove a test's own queues from the shared broker."""
    delete_broker_queues(AMQP_URL, names)
