"""A far region: the provider 150 ms (round trip) from the main site, with the region
routing (``PROVIDER_REGIONS=github:far``) sending its work to ``far.*`` queues.

The same sync is run twice on one stack: once by a worker at the main site, which
reaches the provider through a relay adding 75 ms each way, and once by a worker
on a host near the provider, which reaches Redis, the broker and PostgreSQL at
the main site through relays adding 75 ms each way. Both must be exact; how long
each took is the figure (regional ÷ central), not an assertion.
"""

from __future__ import annotations

import time

from devtools.devstack import WorkerSpec
from tests.hosts.helpers import assert_exact, host_stack, record_figure
from tests.hosts.stack import relay_database_url
from tests.integration.conftest import Stack, new_user

#: each way: a 150 ms round trip between the sites
ONE_WAY_MS = 75.0
SIZE = 5_000
SLOTS = 4


def test_a_far_regions_workers_near_the_provider_against_workers_at_the_main_site(
    network, tmp_path
):
    network.add_host("far")
    dev = host_stack(
        network,
        tmp_path,
        workers=(),
        env={"PROVIDER_REGIONS": "github:far"},
        scenario={"latency_ms": {"mean": 20}},
    )
    dev.placement["simulator"] = "far"
    with dev:
        stack = Stack(dev)
        sim_port = dev.simulator_url.rsplit(":", 1)[1]
        far = network.hosts["far"].address
        # the main site reaches the provider through the distance
        provider = dev.start_relay("provider", f"{far}:{sim_port}", delay_ms=ONE_WAY_MS)
        network.add_host("central")
        dev.host_env["central"] = {"GITHUB_API_URL": f"http://{provider}/github"}
        # the far site reaches the main site's Redis (state and broker) and PostgreSQL
        redis_at = dev.redis_url.split("//", 1)[1].split("/", 1)[0]
        far_redis = dev.start_relay("far-redis", redis_at, host="far", delay_ms=ONE_WAY_MS)
        far_pg = dev.start_relay(
            "far-postgres", dev.relays["postgres"][1], host="far", delay_ms=ONE_WAY_MS
        )
        dev.host_env["far"] = {
            "REDIS_URL": f"redis://{far_redis}/0",
            "CELERY_BROKER_URL": f"redis://{far_redis}/0",
            "DATABASE_URL": relay_database_url(dev.base_env["DATABASE_URL"], far_pg),
        }
        queues = "far.normal,far.whale,far.trickle"
        timings = {}
        for site in ("central", "far"):
            name = f"worker-{site}"
            dev.placement[name] = site
            dev.start_worker(WorkerSpec(queues, pool="threads", concurrency=SLOTS, name=name))
            dev.wait_workers_ready()
            account = stack.add_account("github", SIZE)
            user = new_user()
            began = time.monotonic()
            (sync,) = stack.login(user, account).json()["syncs"]
            assert_exact(stack, user, account, sync["sync_id"])
            timings[site] = time.monotonic() - began
            dev.kill(name)
        record_figure(
            "far-region",
            round_trip_ms=2 * ONE_WAY_MS,
            size=SIZE,
            slots=SLOTS,
            seconds_central=round(timings["central"], 1),
            seconds_regional=round(timings["far"], 1),
            regional_over_central=round(timings["far"] / timings["central"], 2),
        )
