"""The fuzzed app reads and writes the session's own migrated PostgreSQL database,
as the integration tests' apps do (without it, ``make_app`` would fall back to an
embedded server under ./var whose database nothing migrated, and every
PostgreSQL read would answer 500 whatever the input)."""

import pytest


@pytest.fixture(scope="session", autouse=True)
def fuzzed_app_uses_session_database(session_database):
    return session_database
