"""The cluster run is on a cluster: the state is spread over three masters, the broker is RabbitMQ.

Only meaningful in ``make integration-cluster`` (``NETSYNC_TEST_CLUSTER=1``);
elsewhere it is skipped, saying so.
"""

from __future__ import annotations

import pytest
from redis.cluster import RedisCluster

from state.keys import Keys
from tests.conftest import CLUSTER
from tests.integration.conftest import new_user

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not CLUSTER, reason="only in the Redis Cluster run (make integration-cluster)"
    ),
]


def test_syncs_keep_their_state_on_every_master_and_the_broker_is_rabbitmq(stack):
    assert stack.dev.base_env["REDIS_CLUSTER"] == "1"
    assert stack.dev.broker_url.startswith("amqp://")
    users = []
    for _ in range(12):
        account = stack.add_account("github", 150)
        user = new_user()
        (sync,) = stack.login(user, account).json()["syncs"]
        assert stack.wait_final(sync["sync_id"])["status"] == "succeeded"
        users.append(user)
    client = stack.dev.redis_client()
    assert isinstance(client, RedisCluster) and len(client.get_primaries()) == 3
    holders = set()
    for user in users:
        key = Keys("netsync").user("github", user).credential
        node = client.get_node_from_key(key)
        assert client.exists(key)
        holders.add(node.name)
    # the state really is spread over the masters (all 12 tags in one node's slots
    # would happen with probability 3 × (1/3)^12, about 6e-6)
    assert len(holders) >= 2
