"""The queues netsync's work runs on, and the rules that pick one.

- ``normal``: interactive syncs of ordinary accounts; latency matters.
- ``whale``: accounts above ``WHALE_THRESHOLD``; throughput matters, and
  they must never slow ``normal`` down.
- ``trickle``: background refresh of stale networks, at a steady low rate.

Workers subscribe per queue (one Procfile line each), so each class scales
on its own. With ``PROVIDER_REGIONS=facebook:eu`` a provider's work goes to
``eu.normal`` / ``eu.whale`` / ``eu.trickle`` so that only workers near that
provider consume it.
"""
from __future__ import annotations

from kombu import Exchange, Queue

QUEUE_CLASSES = ("normal", "whale", "trickle")

#: trigger kinds that come from a person waiting (a login, an API call, an
#: operator) versus bulk background work
INTERACTIVE_TRIGGERS = ("webhook", "api", "cli")
BULK_TRIGGERS = ("stale",)

#: priority levels, as netsync means them (higher = sooner)
PRIORITY_INTERACTIVE = 9
PRIORITY_BULK = 1
MAX_PRIORITY = 9


def queue_class_for(size: int | None, trigger: str, whale_threshold: int) -> str:
    """The class a sync runs in: size decides whales, a stale re-sync trickles."""
    if size is not None and size > whale_threshold:
        return "whale"
    if trigger in BULK_TRIGGERS:
        return "trickle"
    return "normal"


def queue_name(queue_class: str, provider: str, regions: dict[str, str]) -> str:
    """The broker queue for a class, prefixed by the provider's region if it has one."""
    region = regions.get(provider)
    return f"{region}.{queue_class}" if region else queue_class


def priority_for(trigger: str, broker_url: str) -> int:
    """The message priority for a trigger, in the broker's own convention.

    RabbitMQ delivers higher numbers first; kombu's Redis transport delivers
    *lower* numbers first (0 is the most urgent), so the scale is flipped.
    """
    wanted = PRIORITY_BULK if trigger in BULK_TRIGGERS else PRIORITY_INTERACTIVE
    if broker_url.startswith(("redis://", "rediss://", "redis+socket://")):
        return MAX_PRIORITY - wanted
    return wanted


def all_queue_names(regions: dict[str, str]) -> list[str]:
    names = list(QUEUE_CLASSES)
    for region in sorted(set(regions.values())):
        names += [f"{region}.{cls}" for cls in QUEUE_CLASSES]
    return names


def declare_queues(regions: dict[str, str]) -> list[Queue]:
    """kombu queues with priorities enabled (``x-max-priority`` on RabbitMQ)."""
    exchange = Exchange("netsync", type="direct")
    return [
        Queue(name, exchange, routing_key=name, queue_arguments={"x-max-priority": MAX_PRIORITY})
        for name in all_queue_names(regions)
    ]
