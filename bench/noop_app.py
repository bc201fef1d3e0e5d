"""A Celery app with one no-op task on netsync's own broker settings.

The pipeline benchmark compares page throughput with this: the most tasks
per second Celery itself moves on the same broker, pool and concurrency.
"""
import os
from types import SimpleNamespace

from celery import Celery

from service.celery_app import celery_config

settings = SimpleNamespace(broker_url=os.environ["CELERY_BROKER_URL"], provider_regions={},
                           task_soft_time_limit=30)
app = Celery("noop")
app.conf.update(celery_config(settings, os.environ["CELERY_BROKER_URL"]))


@app.task(name="bench.noop", acks_late=True, ignore_result=True)
def noop():
    return None
