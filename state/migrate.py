"""Schema migrations (Alembic, scripts in ``state/migrations``), run from code.

``flask --app service db upgrade`` (production), ``make run``/``make demo``
and the test set-up all call ``upgrade``. ``/readyz`` asks ``lag`` whether the
database is behind the code's migrations.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

from alembic import command
from alembic.config import Config

SCRIPTS = Path(__file__).resolve().parent / "migrations"


def sqlalchemy_url(database_url: str) -> str:
    """A libpq URL as SQLAlchemy's psycopg 3 dialect wants it."""
    scheme, sep, rest = database_url.partition("://")
    if scheme in ("postgres", "postgresql"):
        return f"postgresql+psycopg://{rest}"
    return database_url


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    # Config interpolates %(...)s: a percent-encoded URL needs doubling
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def current(database_url: str) -> str | None:
    import psycopg

    with psycopg.connect(database_url, connect_timeout=10) as conn:
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    return row[0] if row else None


#: what an operator runs when the database is behind
UPGRADE_HINT = "run: flask --app service db upgrade"


@functools.cache
def _scripts():
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(""))
    return frozenset(script.get_heads()), frozenset(r.revision for r in script.walk_revisions())


def heads() -> frozenset[str]:
    """The revisions this code's migrations end at."""
    return _scripts()[0]


def lag(at: Iterable[str] | None) -> str | None:
    """Why a database at revisions ``at`` (None: never migrated) is behind this code's
    migrations; None when it is not."""
    return lag_between(at, *_scripts())


def lag_between(
    at: Iterable[str] | None, heads: frozenset[str], known: frozenset[str]
) -> str | None:
    """``lag`` with the migrations given. A revision the migrations do not know was
    made by newer code (a deploy migrates before it starts its processes, and a
    migration keeps the code before it working): not behind."""
    at = set(at or ())
    if not at:
        return f"not migrated ({UPGRADE_HINT})"
    if heads <= at or not at <= known:
        return None
    return (
        f"schema behind: at {', '.join(sorted(at))}, this code needs "
        f"{', '.join(sorted(heads))} ({UPGRADE_HINT})"
    )
