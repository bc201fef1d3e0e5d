"""A Celery app with no-op tasks on netsync's own broker settings.

The pipeline benchmark compares page throughput with this: the most tasks
per second Celery itself moves on the same broker, pool and concurrency,
publishing included as the pipeline publishes (one task sends the fan-out,
the way a profile task sends a sync's pages).
"""

import os

from celery import Celery

from service.celery_app import celery_config
from service.config import load_settings

settings = load_settings(os.environ)
app = Celery("noop")
app.conf.update(celery_config(settings, os.environ["CELERY_BROKER_URL"]))


@app.task(name="bench.noop", acks_late=True, ignore_result=True)
def noop():
    return None


@app.task(name="bench.fanout", acks_late=True, ignore_result=True)
def fanout(count: int):
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            app.send_task("bench.noop", queue="noopq", producer=producer)
