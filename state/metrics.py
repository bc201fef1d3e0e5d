"""Counters and histograms every process adds to, in Redis, so ``/metrics`` sees them all.

Why Redis rather than prometheus_client's multiprocess mode: the numbers
come from gunicorn workers, Celery worker processes (prefork children and
thread pools), the scheduler and the ops CLI, on several machines; a
shared directory only joins the processes of one machine, and it needs
cleaning when processes die. One Redis hash joins all of them and survives
restarts (a counter that resets on a worker restart is what Prometheus'
``rate`` expects anyway, and this one does not even reset).

Keys::

    <prefix>:metrics        HASH  'name{label="v",...}' -> count
    <prefix>:metrics:hist   HASH  'name{labels}|<le>' -> observations in that bucket (not cumulative),
                                  'name{labels}|sum' -> sum, 'name{labels}|count' -> count
    <prefix>:metrics:instances ZSET 'provider@instance' -> answers from it: which
                                  instances of a federated provider are the busiest

Instances of a federated provider are many (every Mastodon server a user is
on), so their series are written per instance but exposed with bounded
cardinality (``service.metrics``): the ``INSTANCE_LABELS`` busiest by name,
the rest summed as ``other``.
"""

from __future__ import annotations

import bisect
import logging
import re

import redis

from state.keys import Keys

log = logging.getLogger("netsync.metrics")

_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")

#: seconds: a sync takes from under a second (small) to hours (whales waiting on quota)
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)
#: seconds from the trigger to the first provider call (queueing + a quota wait)
FIRST_CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


#: instances of each federated provider named in metric labels; the rest are ``other``
INSTANCE_LABELS = 20


def label_value(value) -> str:
    """A label value as the metrics hash writes it."""
    return _LABEL_UNSAFE.sub("_", str(value))


def counter_field(name: str, labels: dict) -> str:
    """The hash field of one counter series, in Prometheus' own notation."""
    pairs = ",".join(
        f'{key}="{_LABEL_UNSAFE.sub("_", str(labels[key]))}"' for key in sorted(labels)
    )
    return f"{_NAME_UNSAFE.sub('_', name)}{{{pairs}}}"


class Metrics:
    """The shared counters: one round trip per count (or per batch), never failing the caller."""

    def __init__(self, redis_client, key_prefix: str):
        self.redis = redis_client
        keys = Keys(key_prefix)
        self.key, self.hist_key = keys.metrics, keys.metrics_histograms
        self.instances_key = keys.metrics_instances

    def note_instance(self, provider: str, instance: str, batch=None) -> None:
        """One answer from ``instance`` of a federated provider (its busyness rank)."""
        member = f"{provider}@{instance}"
        if batch is not None:
            batch.add(lambda pipe: pipe.zincrby(self.instances_key, 1, member), best_effort=True)
            return
        try:
            self.redis.zincrby(self.instances_key, 1, member)
        except redis.RedisError as exc:
            log.warning("instance rank not counted: %s", type(exc).__name__)

    def busiest_instances(self, per_provider: int = INSTANCE_LABELS) -> dict[str, list[str]]:
        """Provider → its busiest instances (most answers first), ``per_provider`` each."""
        ranked: dict[str, list[str]] = {}
        for member in self.redis.zrevrange(self.instances_key, 0, -1):
            provider, _, instance = member.decode().partition("@")
            names = ranked.setdefault(provider, [])
            if len(names) < per_provider:
                names.append(instance)
        return ranked

    def count(self, name: str, **labels) -> None:
        self.count_many([(name, labels)])

    def count_many(self, series: list[tuple[str, dict]], batch=None) -> None:
        """Add one to each (name, labels) series, in one round trip.

        ``batch``: only queued in that ``state.batch.Batch``, as a best-effort
        step (sent with the caller's next round trip; a reply error is dropped).
        """
        if batch is not None:
            fields = [counter_field(name, labels) for name, labels in series]
            batch.add(lambda pipe: [pipe.hincrby(self.key, f, 1) for f in fields], best_effort=True)
            return
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for name, labels in series:
                    pipe.hincrby(self.key, counter_field(name, labels), 1)
                pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.debug(
                "counter not counted",
                extra={"counter": series[0][0], "error_type": type(exc).__name__},
            )

    def add_many(self, series: list[tuple[str, dict, int]]) -> None:
        """Add ``amount`` to each (name, labels, amount) counter series, in one round trip
        (best effort, as ``count_many``)."""
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for name, labels, amount in series:
                    if amount:
                        pipe.hincrby(self.key, counter_field(name, labels), int(amount))
                pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.debug(
                "counter not counted",
                extra={"counter": series[0][0] if series else "", "error_type": type(exc).__name__},
            )

    def observe(self, name: str, value: float, buckets: tuple, **labels) -> None:
        """One observation of a histogram (bucket bounds are fixed per name)."""
        series = counter_field(name, labels)
        index = bisect.bisect_left(buckets, value)
        bound = repr(float(buckets[index])) if index < len(buckets) else "+Inf"
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.hincrby(self.hist_key, f"{series}|{bound}", 1)
                pipe.hincrbyfloat(self.hist_key, f"{series}|sum", float(value))
                pipe.hincrby(self.hist_key, f"{series}|count", 1)
                pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.debug(
                "histogram not observed",
                extra={"histogram": name, "error_type": type(exc).__name__},
            )

    def raw(self) -> dict:
        """Every counter series as written (field → count)."""
        return self.redis.hgetall(self.key)

    def raw_histograms(self) -> dict:
        return self.redis.hgetall(self.hist_key)
