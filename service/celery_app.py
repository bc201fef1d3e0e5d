"""The Celery app, shaped after Flask's own Celery example.

Tasks reach the process's services through the Celery app (``sync.runtime``); the
Celery app lives in ``app.extensions["celery"]``. Settings
follow the talk and Celery's docs for long I/O-bound work: ack late and
requeue work whose worker died, prefetch one, no results (sync state is
ours, in Redis: Celery says PENDING for anything it does not know).
"""

from __future__ import annotations

from celery import Celery
from flask import Flask

import queues
from sync import broker as redis_broker
from sync import heartbeat
from sync.runtime import NetsyncTask
from sync.tasks import register_tasks


def celery_config(settings, redis_url: str) -> dict:
    broker = settings.broker_url or redis_url
    return {
        "broker_url": broker,
        # on Redis, kombu's transport with its give-back-on-close fault made
        # harmless (sync/broker.py): it made workers exit after a Redis restart.
        # Plain redis:// only: rediss:// keeps kombu's own (its TLS set-up untested here)
        **({"broker_transport": redis_broker.TRANSPORT} if broker.startswith("redis://") else {}),
        "broker_connection_retry_on_startup": True,
        # RabbitMQ drops a consumer whose host is lost after ~2 heartbeats and requeues
        # its unacked messages (Celery's 120 s left them there for minutes)
        "broker_heartbeat": settings.broker_heartbeat_seconds,
        "broker_transport_options": broker_transport_options(settings.broker_visibility_timeout),
        # RabbitMQ: every queue with x-max-priority, also those made on the fly
        "task_queues": queues.declare_queues(settings.provider_regions),
        "task_queue_max_priority": queues.MAX_PRIORITY,
        "task_default_priority": queues.default_priority(broker),
        "task_default_queue": "normal",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_ignore_result": True,
        "result_backend": None,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_time_limit": settings.task_soft_time_limit + 15,
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # After a broker reconnect Celery lowers the prefetch count by the tasks
        # still running and raises it again only as messages received *after*
        # the reconnect are acked. A threads-pool worker's tasks cannot be
        # cancelled (they finish on their own, failing on the dead connection),
        # so the lowered count can starve it; our tasks are idempotent and acked
        # late, so a full prefetch after a reconnect costs at most one message
        # per slot waiting a little.
        "worker_enable_prefetch_count_reduction": False,
        "task_create_missing_queues": True,
    }


def broker_transport_options(visibility_timeout: int) -> dict:
    """How the Redis transport hands out messages: priority steps, queue order, redelivery."""
    return {
        # Redis: one list per priority step (``normal``, ``normal:1`` …
        # ``normal:9``), BRPOPed lowest step first, so within a queue a
        # lower number goes first (see ``queues.priority_for``).
        "priority_steps": list(range(queues.MAX_PRIORITY + 1)),
        "sep": ":",
        # A worker given several queues (``-Q normal,trickle``) checks them
        # in the order given instead of round robin (priority still wins
        # across them: every queue's step 0 is checked before any step 1).
        "queue_order_strategy": "priority",
        # the visibility timeout bounds how long a dead worker's message waits
        "visibility_timeout": visibility_timeout,
    }


def celery_init_app(app: Flask) -> Celery:
    """The Celery app, in ``app.extensions["celery"]``, carrying the process's services.

    Tasks reach the services through their Celery app (``sync.runtime``), so
    they need no Flask app context: the engine does not depend on Flask.
    """
    services = app.extensions["netsync"]
    celery_app = Celery(app.name, task_cls=NetsyncTask)
    celery_app.conf.update(celery_config(services.settings, services.redis_url))
    celery_app.netsync_services = services
    app.extensions["celery"] = celery_app
    register_tasks(celery_app)
    # workers beat and say which pages they hold: a lost one is noticed in seconds
    heartbeat.install(celery_app)
    return celery_app
