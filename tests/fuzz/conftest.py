"""The fuzzed app reads and writes the session's own migrated PostgreSQL database,
as the integration tests' apps do (without it, ``make_app`` would fall back to an
embedded server under ./var whose database nothing migrated, and every
PostgreSQL read would answer 500 whatever the input)."""
from tests.integration.conftest import session_database  # noqa: F401  (autouse fixture)
