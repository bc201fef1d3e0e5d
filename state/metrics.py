"""Counters every process adds to, kept in one Redis hash so ``/metrics`` sees them all."""
from __future__ import annotations

import logging
import re

import redis

from state.keys import Keys

log = logging.getLogger("netsync.metrics")

_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


def counter_field(name: str, labels: dict) -> str:
    """The hash field of one counter series, in Prometheus' own notation."""
    pairs = ",".join(f'{key}="{_LABEL_UNSAFE.sub("_", str(labels[key]))}"'
                     for key in sorted(labels))
    return f"{_NAME_UNSAFE.sub('_', name)}{{{pairs}}}"


class Metrics:
    """The shared counters: one HINCRBY per count, never failing the caller."""

    def __init__(self, redis_client, key_prefix: str):
        self.redis = redis_client
        self.key = Keys(key_prefix).metrics

    def count(self, name: str, **labels) -> None:
        try:
            self.redis.hincrby(self.key, counter_field(name, labels), 1)
        except (redis.RedisError, OSError) as exc:
            log.debug("counter not counted", extra={"counter": name,
                                                    "error_type": type(exc).__name__})

    def raw(self) -> dict:
        """Every counter series as written (field → count)."""
        return self.redis.hgetall(self.key)
