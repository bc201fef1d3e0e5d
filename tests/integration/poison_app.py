"""The service's Celery app with a poison page: a worker that parses a GitHub page
whose cursor contains ``NETSYNC_TEST_POISON`` dies at once (``os._exit``), every
time, as a page that crashes or OOMs its worker would. Used by test_faults only."""

from __future__ import annotations

import os

from providers.github import GitHub
from service.make_celery import celery_app  # noqa: F401 - the app the worker runs

POISON = os.environ.get("NETSYNC_TEST_POISON", "")
_parse_page = GitHub.parse_page


def parse_page_or_die(self, body, headers, cursor):
    if POISON and POISON in cursor:
        os._exit(13)
    return _parse_page(self, body, headers, cursor)


GitHub.parse_page = parse_page_or_die
