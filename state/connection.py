"""The one place a Redis client for the state is made: one server, or a Redis Cluster.

With ``cluster`` (``REDIS_CLUSTER=1``) the client is redis-py's
``redis.cluster.RedisCluster``, given any node's URL: it learns the slot map
from that node and sends each command to the master of its key's slot. That
is all netsync needs, because every script and transaction it runs touches
keys of one hash tag (``state.keys``), and what spans slots is either a
non-transactional pipeline (the cluster client splits it per node) or a SCAN,
which the cluster client runs on every master.
"""

from __future__ import annotations

import redis
from redis.cluster import RedisCluster


def connect(url: str, cluster: bool = False, **options):
    """A client for ``url``: ``RedisCluster`` if ``cluster``, else ``redis.Redis``."""
    if cluster:
        return RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)
