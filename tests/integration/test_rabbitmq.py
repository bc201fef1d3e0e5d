"""The same syncs with RabbitMQ as the broker, where one is reachable.

Isolation on a shared RabbitMQ: the test routes its provider to a region of
its own (``PROVIDER_REGIONS=github:<random>``), so every queue it uses is
``<random>.normal`` etc., and deletes those queues afterwards.
"""

from __future__ import annotations

import secrets

import pytest
import requests

from devtools.devstack import DevStack, WorkerSpec

# (test_faults imports these from here)
from tests.integration.brokers import AMQP_URL, delete_amqp_queues, rabbitmq_reachable  # noqa: F401
from tests.integration.conftest import TEST_ENV, Stack, new_user

pytestmark = pytest.mark.skipif(
    not rabbitmq_reachable(),
    reason=f"RabbitMQ not reachable at {AMQP_URL}: broker tests skipped (set TEST_AMQP_URL)",
)


@pytest.fixture(scope="module")
def amqp_stack(tmp_path_factory):
    region = "t" + secrets.token_hex(4)
    queues = [f"{region}.{cls}" for cls in ("normal", "whale", "trickle")]
    dev = DevStack(
        var_dir=tmp_path_factory.mktemp("amqp"),
        workers=[WorkerSpec(",".join(queues), pool="prefork", concurrency=2, name="amqp")],
        env={**TEST_ENV, "CELERY_BROKER_URL": AMQP_URL, "PROVIDER_REGIONS": f"github:{region}"},
        redis_db=15,
    )
    try:
        with dev:
            yield Stack(dev)
    finally:
        delete_amqp_queues(queues)


@pytest.mark.parametrize("size", [0, 250, 3_000])
def test_sync_over_rabbitmq(amqp_stack, size):
    account = amqp_stack.add_account("github", size)
    user = new_user()
    (sync,) = amqp_stack.login(user, account).json()["syncs"]
    record = amqp_stack.wait_final(sync["sync_id"], timeout=120)
    assert record["status"] == "succeeded", record
    assert set(amqp_stack.network_ids(user, "github")) == amqp_stack.truth("github", account["id"])


def test_readyz_sees_rabbitmq(amqp_stack):
    response = requests.get(f"{amqp_stack.web}/readyz", timeout=10)
    assert response.status_code == 200, response.text
