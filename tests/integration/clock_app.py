"""The service's Celery app with a spend clock the test moves: the spend book of
every worker process reads the time as the real time plus an offset kept in Redis
(``OFFSET_KEY``), so a test can make the UTC day end without waiting for it. Only
the spend book's clock moves (which day a call is reserved in, and how long a
refused call parks); quotas, the delayed set and everything else keep the real
time. Used by test_spend_budget only."""

from __future__ import annotations

import os
import time

import redis

from service.make_celery import celery_app
from tests.integration.test_spend_budget import OFFSET_KEY

_client = redis.Redis.from_url(os.environ["REDIS_URL"])


def moved_clock() -> float:
    offset = _client.get(OFFSET_KEY)
    return time.time() + float(offset or 0)


celery_app.netsync_services.gate.spend.clock = moved_clock
