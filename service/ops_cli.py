"""Ops CLI commands that act on running work (``flask --app service …``).

    syncs cancel SYNC_ID
    providers list | pause P [--instance I] [--reason TEXT] | resume P [--instance I]
    callbacks list [--failed] [--limit N] | redeliver DELIVERY_ID

Exit codes: 0 done, 1 refused (unknown id, already final), 2 usage error.
"""

from __future__ import annotations

import datetime

import click
from flask import Flask, current_app
from flask.cli import AppGroup

import providers
from service import operations
from service.cli import reports_outages, syncs_cli
from service.config import PROVIDERS
from service.extensions import services
from service.observability import count
from state.control import instance_switch
from sync import callbacks, egress

providers_cli = AppGroup("providers", help="Pause and resume calls to a provider.")
callbacks_cli = AppGroup("callbacks", help="Look at and resend callback deliveries.")


def _when(epoch) -> str:
    if epoch is None:
        return "-"
    return datetime.datetime.fromtimestamp(float(epoch), datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


@syncs_cli.command("cancel")
@click.argument("sync_id")
@click.option("--reason", default="", help="kept with the sync's error message")
@reports_outages
def cancel_sync(sync_id, reason):
    """Cancel an active sync; the previous network stays."""
    result = operations.cancel_sync(services(), current_app.extensions["celery"], sync_id, reason)
    if result.outcome == "unknown":
        raise click.ClickException(f"no sync {sync_id!r}")
    if result.outcome == "final":
        raise click.ClickException(
            f"sync {sync_id} is already final ({(result.record or {}).get('status')})"
        )
    count("cancels", via="cli")
    click.echo(f"{sync_id}: cancelled")


_INSTANCE_HELP = (
    "one instance of a federated provider (mastodon, bluesky): its host[:port][/path], "
    "e.g. fosstodon.org; the others go on"
)


def _switch_name(provider: str, instance: str | None) -> str:
    if instance is None:
        return provider
    if not providers.provider_class(provider).FEDERATED:
        raise click.UsageError(f"--instance is only for federated providers, not {provider}")
    name = egress.instance_name(instance if "://" in instance else f"https://{instance}")
    return instance_switch(provider, name)


@providers_cli.command("pause")
@click.argument("provider", type=click.Choice(PROVIDERS))
@click.option("--instance", default=None, help=_INSTANCE_HELP)
@click.option("--reason", default="", help="shown on the dashboard and in `providers list`")
@reports_outages
def pause(provider, instance, reason):
    """Stop every call to PROVIDER (or one of its instances; calls park) until `providers resume`."""
    name = _switch_name(provider, instance)
    changed = operations.pause_provider(services(), name, reason)
    click.echo(f"{name}: paused" if changed else f"{name}: was already paused")


@providers_cli.command("resume")
@click.argument("provider", type=click.Choice(PROVIDERS))
@click.option("--instance", default=None, help=_INSTANCE_HELP)
@reports_outages
def resume(provider, instance):
    """Let calls to PROVIDER (or one of its instances) go again (parked calls are sent at once)."""
    name = _switch_name(provider, instance)
    changed, released = operations.resume_provider(services(), name)
    state = "resumed" if changed else "was not paused"
    click.echo(f"{name}: {state}; {released} parked calls released")


@providers_cli.command("list")
@reports_outages
def list_providers():
    """Every provider and whether it is paused, then each paused instance."""
    paused = services().switches.paused()
    for name in PROVIDERS:
        if name in paused:
            why = paused[name].get("reason") or "-"
            click.echo(f"{name:<10} paused since {_when(paused[name].get('at'))} reason={why}")
        else:
            click.echo(f"{name:<10} active")
    for name in sorted(n for n in paused if "@" in n):
        why = paused[name].get("reason") or "-"
        click.echo(f"{name} paused since {_when(paused[name].get('at'))} reason={why}")


@callbacks_cli.command("list")
@click.option("--failed", is_flag=True, help="only the dead-letter list")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@reports_outages
def list_callbacks(failed, limit):
    """Recent callback deliveries (newest first), or the failed ones."""
    outbox = services().outbox
    deliveries = outbox.failed(limit) if failed else outbox.recent(limit)
    if not deliveries:
        click.echo("no failed deliveries" if failed else "no deliveries")
        return
    for d in deliveries:
        click.echo(
            f"{d.id}  {d.event:<17} {d.state:<9} attempts={d.attempts} "
            f"last={d.last_status or '-'} error={d.last_error or '-'} "
            f"created={_when(d.created_at)} next={_when(d.next_at)}"
        )


@callbacks_cli.command("redeliver")
@click.argument("delivery_id")
@reports_outages
def redeliver(delivery_id):
    """Send a delivery again now (same id), attempts counted from zero."""
    delivery = callbacks.redeliver(current_app.extensions["celery"], delivery_id)
    if delivery is None:
        raise click.ClickException(f"no delivery {delivery_id!r}")
    click.echo(f"{delivery_id}: queued for delivery")


def init_app(app: Flask) -> None:
    app.cli.add_command(providers_cli)
    app.cli.add_command(callbacks_cli)
