"""The ops CLI (``flask --app service …``): re-sync networks and look at syncs.

    resync USER_ID [--provider P] [--relation R] [--force] [--wait]
    resync USER_ID --mode full|incremental|auto
    resync --stale-after 24h [--limit N] [--provider P]     # cron: full syncs, trickle queue
    syncs show SYNC_ID
    syncs list [--status S] [--queue Q]
    syncs sweep                                             # cron: recover stalled syncs
    credentials rotate-key                                  # after a new TOKEN_ENCRYPTION_KEY

Exit codes: 0 done, 1 failed (a sync finished failed / needs_reauth /
cancelled, timed out, or could not start), 2 usage error.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections import Counter

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from providers.provider import RELATION_NAMES
from queues import QUEUE_CLASSES
from service.api import sync_view, trigger_outcome
from service.config import PROVIDERS
from service.extensions import services
from service.http_errors import UNAVAILABLE
from service.observability import count
from service.syncs import SyncRequestError, relations_of, start_sync, validate_target
from state.store import ACTIVE, FINAL
from sync.modes import AUTO, FULL, MODES

#: final statuses that make the command fail
FAILED = ("failed", "needs_reauth", "cancelled")

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds in ``30m``, ``24h``, ``7d``, ``90s`` or ``3600``; ValueError otherwise."""
    match = _DURATION.match(text or "")
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30m, 24h, 7d or 3600")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class Duration(click.ParamType):
    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def reports_outages(command):
    """Redis or the broker being down is a clear exit 1, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UNAVAILABLE as exc:
            raise click.ClickException(
                f"a backing service is unavailable ({type(exc).__name__})"
            ) from exc

    return wrapper


# -- progress ------------------------------------------------------------------------
def describe_progress(view: dict) -> str:
    """One line of a sync's progress: status, pages, connections of expected, a bar."""
    done, total = view["connections_fetched"], view["expected_total"]
    text = (
        f"{view['provider']} {view['sync_id']} {view['status']:<12} "
        f"pages={view['pages_fetched']} connections={done}"
    )
    if total:
        share = min(1.0, done / total)
        text += f"/{total} [{'#' * int(share * 24):<24}] {share:4.0%}"
    return text


def watch_sync(sync_id: str, timeout_s: int, poll_s: float) -> dict | None:
    """Redraw a sync's progress until it is final; its view, or None on timeout."""
    store = services().store
    redraw = click.get_text_stream("stderr").isatty()
    shown, deadline = None, time.monotonic() + timeout_s
    while True:
        view = sync_view(store.get_sync(sync_id) or {"sync_id": sync_id})
        line = describe_progress(view)
        if line != shown:
            # On a terminal the line is redrawn in place; in a log, one line per change.
            click.echo(f"\r\x1b[2K{line}" if redraw else line, err=True, nl=not redraw)
            shown = line
        if view["status"] not in ACTIVE:  # final (or vanished): nothing more to show
            break
        if time.monotonic() >= deadline:
            view = None
            break
        time.sleep(poll_s)
    if redraw:
        click.echo("", err=True)
    return view


# -- resync ----------------------------------------------------------------------------
def _start(
    user_id: str,
    provider: str,
    trigger: str,
    force: bool,
    relation: str | None = None,
    mode: str = AUTO,
) -> tuple[str, object]:
    """(outcome, ticket or the refusal): one trigger, counted."""
    try:
        ticket = start_sync(
            services(),
            user_id=user_id,
            provider=provider,
            trigger=trigger,
            force=force,
            relation=relation,
            mode=mode,
        )
    except SyncRequestError as exc:
        count("triggers", kind=trigger, outcome=exc.code)
        return exc.code, exc
    outcome = trigger_outcome(ticket)
    count("triggers", kind=trigger, outcome=outcome)
    return outcome, ticket


def resync_user(
    user_id: str,
    provider: str | None,
    force: bool,
    wait: bool,
    timeout_s: int,
    poll_s: float,
    relation: str | None = None,
    mode: str = AUTO,
) -> int:
    """Start (or find) a user's syncs; with ``wait``, follow each until it is final."""
    svc = services()
    providers = (
        [provider]
        if provider
        else [name for name in PROVIDERS if svc.credentials.exists(name, user_id)]
    )
    if not providers:
        raise click.ClickException(
            f"no linked accounts for {user_id}; they arrive with a login webhook"
        )
    exit_code, tickets = 0, []
    targets = [(p, r) for p in providers for r in relations_of(p) if relation in (None, r)]
    for name, relation_name in targets:
        outcome, result = _start(user_id, name, "cli", force, relation_name, mode)
        if isinstance(result, SyncRequestError):
            click.echo(f"{name} {relation_name}: not started: {result}", err=True)
            exit_code = 1
            continue
        note = " (synced recently; --force to sync anyway)" if outcome == "fresh" else ""
        click.echo(
            f"{name} {relation_name}: {outcome} {result.sync_id or '-'} "
            f"queue={result.queue or '-'}{note}"
        )
        tickets.append(result)
    if wait:
        for ticket in tickets:
            if ticket.status != "fresh" and ticket.sync_id:
                exit_code = max(exit_code, _wait_for(ticket.sync_id, timeout_s, poll_s))
    return exit_code


def _wait_for(sync_id: str, timeout_s: int, poll_s: float) -> int:
    view = watch_sync(sync_id, timeout_s, poll_s)
    if view is None:
        click.echo(f"{sync_id}: still running after {timeout_s}s", err=True)
        return 1
    error = view["error"] or {}
    detail = f": {error.get('kind')}: {error.get('message')}" if error else ""
    reason = f" ({view['partial_reason']})" if view["partial_reason"] else ""
    click.echo(f"{view['provider']} {view['relation']}: {view['status']}{reason}{detail}")
    return 1 if view["status"] in FAILED else 0


def stale_targets(svc, verified_before: float, provider: str | None, limit: int) -> list:
    """The ``limit`` networks verified longest ago whose user still has a credential: one
    without (unlinked) could never be synced, and stalest first it would starve the rest."""
    targets, scanned, batch = [], 0, max(limit * 4, 100)
    while len(targets) < limit:
        found = svc.networks.stale_networks(verified_before, provider, scanned + batch)
        fresh = found[scanned:]
        targets += [t for t in fresh if svc.credentials.exists(t[0], t[1])]
        scanned = len(found)
        if len(fresh) < batch:
            break
    return targets[:limit]


def resync_stale(older_than_s: int, provider: str | None, limit: int, force: bool) -> int:
    """Verify the networks verified longest ago: full syncs (trigger ``stale``: the
    trickle queue), picked by ``verified_at`` (never verified first)."""
    targets = stale_targets(services(), time.time() - older_than_s, provider, limit)
    if not targets:
        click.echo(f"no network was last verified more than {older_than_s}s ago")
        return 0
    outcomes = Counter()
    with click.progressbar(
        targets,
        label=f"re-syncing {len(targets)} stale networks",
        file=click.get_text_stream("stderr"),
    ) as bar:
        for target_provider, user_id, relation in bar:
            outcome, _ = _start(
                user_id, target_provider, "stale", force, relation or None, mode=FULL
            )
            outcomes[outcome] += 1
    click.echo(" ".join(f"{outcome}={n}" for outcome, n in sorted(outcomes.items())))
    return 0


@click.command("resync")
@click.argument("user_id", required=False)
@click.option("--provider", type=click.Choice(PROVIDERS), help="only this provider")
@click.option(
    "--relation",
    type=click.Choice(RELATION_NAMES),
    help="only this relation (default: every relation of each provider)",
)
@click.option("--force", is_flag=True, help="sync even if synced within the freshness window")
@click.option("--wait", is_flag=True, help="show progress until every sync is final")
@click.option(
    "--stale-after",
    type=Duration(),
    metavar="DURATION",
    help="verify (full syncs) the networks last verified longer ago than this (30m, 24h, 7d)",
)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default=AUTO,
    show_default=True,
    help="full: read and verify everything; incremental: only what changed; auto: picks",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="with --stale-after: at most this many networks",
)
@click.option(
    "--timeout",
    type=Duration(),
    default="1h",
    show_default=True,
    help="with --wait: give up (exit 1) after this long",
)
@click.option("--poll-interval", type=float, default=1.0, hidden=True)
@with_appcontext
@reports_outages
def resync_command(
    user_id, provider, relation, force, wait, stale_after, mode, limit, timeout, poll_interval
):
    """Re-sync USER_ID's networks now, or (--stale-after) the stalest networks."""
    if (user_id is None) == (stale_after is None):
        raise click.UsageError("give either USER_ID or --stale-after (exactly one)")
    ctx = click.get_current_context()
    if stale_after is not None:
        if wait:
            raise click.UsageError("--wait applies to USER_ID, not to --stale-after")
        ctx.exit(resync_stale(stale_after, provider, limit, force))
    try:
        validate_target(user_id, provider or PROVIDERS[0])
    except SyncRequestError as exc:
        raise click.UsageError(str(exc)) from None
    ctx.exit(resync_user(user_id, provider, force, wait, timeout, poll_interval, relation, mode))


# -- syncs show / list --------------------------------------------------------------------
syncs_cli = AppGroup("syncs", help="Look at syncs.")


def _readable(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return " ".join(f"{key}={_readable(item)}" for key, item in value.items())
    return str(value)


@syncs_cli.command("show")
@click.argument("sync_id")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON instead")
@reports_outages
def show_sync(sync_id, as_json):
    """Print one sync's record."""
    record = services().store.get_sync(sync_id)
    if record is None:
        raise click.ClickException(f"no sync {sync_id!r}")
    view = sync_view(record)
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    width = max(len(key) for key in view)
    for key, value in view.items():
        click.echo(f"{key:<{width}}  {_readable(value)}")


@syncs_cli.command("list")
@click.option("--status", type=click.Choice(("queued", "running", *FINAL)))
@click.option("--queue", type=click.Choice(QUEUE_CLASSES))
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@reports_outages
def list_syncs(status, queue, limit):
    """The most recent syncs, newest first."""
    views = [sync_view(record) for record in services().store.list_syncs(status, queue, limit)]
    if not views:
        click.echo("no syncs")
        return
    columns = (
        "sync_id",
        "provider",
        "user_id",
        "status",
        "queue",
        "trigger",
        "pages_fetched",
        "connections_fetched",
        "created_at",
    )
    rows = [[_readable(view[column]) for column in columns] for view in views]
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(columns)]
    for row in [list(columns), *rows]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@syncs_cli.command("sweep")
@reports_outages
def sweep_syncs():
    """Send the pending pages of stalled syncs again (once; for cron). Exit 0; 1 when the
    broker is unreachable (then nothing is sent)."""
    from sync.recovery import sweeper_for

    report = sweeper_for(current_app.extensions["celery"]).sweep()
    if report.broker_unreachable:
        raise click.ClickException(report.summary())
    click.echo(report.summary())
    for sync_id in report.recovered:
        click.echo(f"recovered {sync_id}")
    for sync_id in report.failed:
        click.echo(f"failed {sync_id}")


credentials_cli = AppGroup("credentials", help="Stored provider credentials.")


@credentials_cli.command("rotate-key")
@reports_outages
def rotate_key():
    """Re-encrypt every stored credential with the first TOKEN_ENCRYPTION_KEY.

    Put the new key first (TOKEN_ENCRYPTION_KEY=new,old), restart, run this;
    when it reports 0 undecryptable, drop the old key. Exit 1 if any credential
    could be decrypted by none of the keys.
    """
    rotated, failed = services().credentials.rotate_all()
    click.echo(f"re-encrypted {rotated} credentials with the first key; {failed} undecryptable")
    if failed:
        click.get_current_context().exit(1)


def init_app(app: Flask) -> None:
    app.cli.add_command(resync_command)
    app.cli.add_command(syncs_cli)
    app.cli.add_command(credentials_cli)
