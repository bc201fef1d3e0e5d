"""``flask --app service db …``: the PostgreSQL schema and the change feed's retention.

db upgrade [REVISION]     # apply migrations (production: before a deploy starts)
db current                # the schema revision the database is at
db prune                  # drop change-feed entries older than CHANGES_RETENTION_DAYS (cron)
"""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

from service.extensions import services
from state import migrate

db_cli = AppGroup("db", help="The PostgreSQL schema and the change feed.")


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def upgrade(revision):
    """Migrate the database to REVISION (default: the latest)."""
    url = services().database_url
    migrate.upgrade(url, revision)
    click.echo(f"database at revision {migrate.current(url)}")


@db_cli.command("current")
def current():
    """Print the schema revision the database is at (none: not migrated yet)."""
    click.echo(migrate.current(services().database_url) or "none")


@db_cli.command("prune")
@click.option(
    "--days", type=float, default=None, help="keep this many days (default: CHANGES_RETENTION_DAYS)"
)
def prune(days):
    """Delete change-feed entries older than the retention."""
    svc = services()
    keep = svc.settings.changes_retention_days if days is None else days
    removed = svc.networks.prune_changes(keep)
    click.echo(f"pruned {removed} change-feed entries older than {keep:g} days")


def init_app(app: Flask) -> None:
    app.cli.add_command(db_cli)
