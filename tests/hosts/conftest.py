"""Fixtures of the hosts tests: a network of namespaced hosts per test, skipped where
namespaces cannot be made (not root, no iproute2, a sandbox), saying why."""

from __future__ import annotations

import pytest

from tests.hosts.netns import Network, unavailable_reason

UNAVAILABLE = unavailable_reason()


def pytest_collection_modifyitems(config, items):
    if UNAVAILABLE is None:
        return
    skip = pytest.mark.skip(reason=f"no network namespaces here: {UNAVAILABLE}")
    for item in items:
        if "tests/hosts/" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def every_stack_uses_session_database(request):
    """The session's database (DATABASE_URL for every process), only where the test runs."""
    if UNAVAILABLE is None:
        request.getfixturevalue("session_database")


@pytest.fixture
def network():
    net = Network()
    try:
        yield net
    finally:
        net.close()
