"""The queues netsync's work runs on, and the rules that pick one.

- ``normal``: interactive syncs of ordinary accounts; latency matters.
- ``whale``: accounts above ``WHALE_THRESHOLD``; throughput matters, and
  they must never slow ``normal`` down.
- ``trickle``: background refresh of stale networks, at a steady low rate.

Workers subscribe per queue (one Procfile line each), so each class scales
on its own. With ``PROVIDER_REGIONS=facebook:eu`` a provider's work goes to
``eu.normal`` / ``eu.whale`` / ``eu.trickle`` so that only workers near that
provider consume it.

Classification (``queue_class_for``): the size decides whales, whatever the
trigger (a stale whale re-sync runs on ``whale``, at bulk priority, behind
login-triggered whales); a stale re-sync of anything smaller trickles; the
rest is ``normal``. The size is the last sync's recorded size when the sync
starts (so the profile call already runs on the right queue) and the profile
call's answer once it has one. A sync that started without a known size and
turns out large while paging continues as a whale (``reclassified``).

Priorities inside a queue (``priority_for``): work a person waits for goes
before bulk work of the same class. The two brokers count the opposite way:
RabbitMQ (``x-max-priority``) delivers *higher* numbers first; kombu's Redis
transport keeps one list per priority step and BRPOPs them lowest step first,
so on Redis *lower* numbers go first (0 is the most urgent). Both halves are
tested with real workers (tests/integration/test_queues.py).
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

#: broker URL schemes served by kombu's Redis transport (lower number first)
REDIS_SCHEMES = ("redis://", "rediss://", "redis+socket://", "sentinel://")


def queue_class_for(size: int | None, trigger: str, whale_threshold: int) -> str:
    """The class a sync runs in: size decides whales, a stale re-sync trickles."""
    if size is not None and size > whale_threshold:
        return "whale"
    if trigger in BULK_TRIGGERS:
        return "trickle"
    return "normal"


def reclassified(queue_class: str, connections_fetched: int, whale_threshold: int) -> str:
    """The class a running sync continues in once it has fetched this many connections.

    A ``normal`` sync whose size was unknown (or understated) when it was
    classified becomes a whale once more than ``whale_threshold`` connections
    have come in: its remaining pages go to ``whale`` (its priority stays its
    trigger's). ``trickle`` stays on its bounded share; nothing moves back down.
    """
    if queue_class == "normal" and connections_fetched > whale_threshold:
        return "whale"
    return queue_class


def queue_name(queue_class: str, provider: str, regions: dict[str, str]) -> str:
    """The broker queue for a class, prefixed by the provider's region if it has one."""
    region = regions.get(provider)
    return f"{region}.{queue_class}" if region else queue_class


def is_redis_broker(broker_url: str) -> bool:
    return broker_url.startswith(REDIS_SCHEMES)


def priority_for(trigger: str, broker_url: str) -> int:
    """The message priority for a trigger, in the broker's own convention.

    RabbitMQ delivers higher numbers first; kombu's Redis transport delivers
    *lower* numbers first (0 is the most urgent), so the scale is flipped.
    """
    wanted = PRIORITY_BULK if trigger in BULK_TRIGGERS else PRIORITY_INTERACTIVE
    if is_redis_broker(broker_url):
        return MAX_PRIORITY - wanted
    return wanted


def default_priority(broker_url: str) -> int:
    """The priority of a message sent without one: interactive, on either broker.

    (Unset, RabbitMQ would treat it as 0, its lowest, and Redis as 0, its highest.)
    """
    return priority_for("api", broker_url)


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
