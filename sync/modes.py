"""How a sync reads its network: ``full`` (read and verify everything) or
``incremental`` (pay only for what changed), and how ``auto`` picks one.

A full sync replaces the network and records removals; an incremental one adds
what it read and removes nothing (it cannot see removals). What "incremental"
means depends on what the provider offers (``Provider.INCREMENTAL``):

- ``conditional`` (GitHub): every page again, with ``If-None-Match``; a ``304``
  reuses what the page held (``sync.etag_cache``) without a counted call;
- ``head`` (X, Bluesky): newest first, from the top until the first connection
  a sync already read (one a push channel added is passed: a follow older than it
  may never have been pushed), the first page sized to the count's growth;
- ``since`` (Mastodon): only the followers newer than the stored head
  (``min_id``), page by page through ``prev`` links, until a short page;
- None (Facebook, LinkedIn): nothing cheaper, every sync is full.

Pure functions (no I/O): the profile task and the page task call them with
what they read, and the unit tests call them alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: the modes a trigger may ask for (CONTRACT ``mode``); ``auto`` is the default
MODES = ("auto", "full", "incremental")
FULL, INCREMENTAL, AUTO = "full", "incremental", "auto"

#: a head that met no known connection after this share of the network gives up
#: and reads on in full (a full sync): past it, a head costs more than it saves
HEAD_BOUND_SHARE = 0.10
#: connections asked beyond the count's growth on a head's first page: the page
#: must reach one known connection to prove the head is complete
HEAD_MARGIN = 5


@dataclass(frozen=True)
class NetworkFreshness:
    """What the stored network says about how it may be re-read (``networks`` row)."""

    count: int
    #: epoch seconds of the last full (verifying) sync; None: never verified
    verified_at: float | None
    #: the provider's "newer than this" marker of the newest connection (Mastodon)
    head: str | None = None
    #: something said the next sync must verify (a push channel's gap)
    needs_full: bool = False
    #: connections a push channel added that no sync has read since (a head passes them)
    streamed: int = 0
    #: the account it was last read from (``account_key``); None: not recorded
    account: str | None = None


@dataclass(frozen=True)
class ModeChoice:
    mode: str
    #: why (``sync.mode_reason`` on the record, ``syncs_by_mode`` in /metrics)
    reason: str


def resolve_mode(
    requested: str,
    incremental_kind: str | None,
    network: NetworkFreshness | None,
    stated_count: int | None,
    now: float,
    full_every_s: float,
    account: str | None = None,
) -> ModeChoice:
    """The mode a sync runs in, from the mode asked for and what is stored.

    ``incremental`` is honoured wherever an incremental read is possible at
    all (a network to add to, a provider with something cheaper, a head for
    ``since``); ``auto`` also runs full when the last verification is older
    than ``full_every_s``, when something asked for one, or when the count
    went down (a removal only a full read can find).

    A network read from another ``account`` (the user linked a new one, or moved
    instance) is read in full whatever was asked: adding the new account's
    connections to the old account's would present a mix as the network.
    """
    if requested == FULL:
        return ModeChoice(FULL, "requested")
    if incremental_kind is None:
        return ModeChoice(FULL, "provider_offers_nothing_cheaper")
    if network is None:
        return ModeChoice(FULL, "never_synced")
    if account is not None and network.account is not None and network.account != account:
        return ModeChoice(FULL, "account_changed")
    if incremental_kind == "since" and not network.head:
        return ModeChoice(FULL, "no_head")
    if requested == INCREMENTAL:
        return ModeChoice(INCREMENTAL, "requested")
    if network.verified_at is None:
        return ModeChoice(FULL, "never_verified")
    if now - network.verified_at >= full_every_s:
        return ModeChoice(FULL, "verification_due")
    if network.needs_full:
        return ModeChoice(FULL, "needs_full")
    if stated_count is not None and stated_count < network.count:
        return ModeChoice(FULL, "count_went_down")
    return ModeChoice(INCREMENTAL, "auto")


def account_key(account_id: str, instance: str | None, ids_per_instance: bool) -> str:
    """The account a network is read from, as ``networks.account`` keeps it: the
    instance counts only where account ids are per instance (Mastodon)."""
    return f"{(instance or '') if ids_per_instance else ''} {account_id}"


# -- heads ------------------------------------------------------------------------------
def head_first_size(
    stated_count: int | None, known_count: int, page_size: int, streamed: int = 0
) -> int:
    """The first head page's size: the count's growth, the ``streamed`` connections
    among the newest (a head passes them: ``known_count`` includes them) and a margin
    that reaches one connection a sync read, at most a page (a size the provider takes)."""
    growth = max(0, (stated_count or 0) - known_count)
    return max(1, min(page_size, growth + streamed + HEAD_MARGIN))


def head_bound(known_count: int, page_size: int) -> int:
    """The most connections a head reads before it gives up: 10 % of the network,
    never less than one page (a small network's head is one call anyway)."""
    return max(page_size, math.ceil(known_count * HEAD_BOUND_SHARE))


@dataclass(frozen=True)
class HeadStep:
    """What a head page decides: ``go_on`` (the next head page), ``done`` (the head met
    what is known), or ``full`` (read on in full: the sync becomes full) and why."""

    action: str
    reason: str = ""


def head_step(
    *,
    kind: str,
    met_known: bool,
    page_full: bool,
    has_next: bool,
    read_so_far: int,
    bound: int,
    new_so_far: int,
    known_count: int,
    stated_count: int | None,
    check_count: bool,
) -> HeadStep:
    """One head page's decision (``kind``: ``head`` or ``since``).

    ``read_so_far`` counts this page's connections; ``new_so_far`` the unknown
    ones of the head's pages, this one included. A ``head`` ends at the first
    known connection, a ``since`` read at its first short page. At its end,
    with ``check_count`` (``auto``), the profile's count must equal the stored
    count plus the new heads, else nothing from the head is trusted: the sync
    reads on in full.
    """
    ended = met_known if kind == "head" else not page_full
    if kind == "head" and not met_known and not has_next:
        # the list ended before any known connection: everything was read
        return HeadStep("full", "head_read_everything")
    if kind == "since" and page_full and not has_next:
        ended = True  # a full page with no newer link: the provider says it is the top
    if not ended:
        if read_so_far >= bound:
            return HeadStep("full", "head_bound")
        return HeadStep("go_on")
    if check_count and stated_count is not None and stated_count != known_count + new_so_far:
        return HeadStep("full", "count_mismatch")
    return HeadStep("done")


# -- head cursors: ``h<size>|<cursor>`` (size 0: the provider's page size) ---------------
HEAD_PREFIX = "h"


def with_head(size: int, cursor: str) -> str:
    return f"{HEAD_PREFIX}{size}|{cursor}"


def split_head(cursor: str) -> tuple[int | None, str]:
    """``h50|followers:`` → (50, "followers:"); a cursor that is no head's → (None, cursor)."""
    head, sep, rest = cursor.partition("|")
    if sep and head[:1] == HEAD_PREFIX and head[1:].isdigit():
        return int(head[1:]), rest
    return None, cursor
