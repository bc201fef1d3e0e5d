"""What every simulated provider is made of: its facts, routes, an error table, render hooks.

A provider module is one ``ProviderSim`` subclass, mostly data: its routes
and error table (``ROUTES``, ``ERROR_ROWS``, the ``ROW_*`` names), and every
fact the shared modules read instead of keeping a table per provider
(``RELATIONS``, ``NATIVE_IDS``, ``RATE_LIMITS``, ``PAGE_FAULTS``,
``TOKEN_TTL_S``, ...: see the class). Then a few small hooks: read the
credentials, render an error row, render the rate-limit headers, and one
handler per route. The request pipeline (auth, faults, quotas, latency,
stats) lives in ``simulator.app`` and is the same for all of them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..errors import ScenarioError

#: The page faults (``simulator.faults``): they change how a page handler renders a
#: page, so each provider's class lists those its handler renders (``PAGE_FAULTS``).
PAGE_KINDS = (
    "off_by_one",  # endless one-person pages (LinkedIn)
    "empty_page_with_next",  # data [] but paging.next (Facebook)
    "cursor_expired",  # code 100 on cursor pages (Facebook)
    "short_page",  # fewer items, the cursor goes on
)


@dataclass(frozen=True)
class ErrorRow:
    """One line of a provider's error table, as the provider sends it.

    ``code`` is the provider's own error code (Twitter v1.1 code, Facebook
    ``error.code``, LinkedIn ``serviceErrorCode``; the HTTP status for
    GitHub and Mastodon, which have none). ``family`` groups rows that one
    condition may come back as (Facebook's bad-token messages).
    """

    name: str
    status: int
    message: str
    code: int | None = None
    subcode: int | None = None
    family: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    """One endpoint under the provider's prefix.

    ``account_param`` names the path part holding the account id; ``None``
    means the account is the token's owner (LinkedIn's ``q=viewer``,
    ``/me``-style paths). ``authenticated=False`` routes (the OAuth token
    endpoints) skip the bearer-token check, the account lookup and quotas.
    """

    method: str
    path: str
    handler: str
    kind: str
    relation: str | None = None
    account_param: str | None = None
    authenticated: bool = True


@dataclass
class Credentials:
    token: str | None = None
    scheme: str | None = None  # "bearer", "token", "oauth1", "query"
    problem: str | None = None  # error row name for a malformed header


class RawJSON(str):
    """JSON text already encoded: page bodies are built from per-item templates
    (all values are ASCII-safe), which is several times cheaper than dicts
    through ``json.dumps`` on the hot path."""


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def json_object(*members: tuple[str, str]) -> RawJSON:
    """``{"key": <json text>, ...}`` from already-encoded member values."""
    return RawJSON("{" + ",".join(f'"{key}":{text}' for key, text in members) + "}")


def json_response(
    body: Any,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    content_type: str = "application/json",
) -> web.Response:
    text = body if isinstance(body, RawJSON) else dumps(body)
    return web.Response(
        text=text, status=status, headers=headers, content_type=content_type, charset="utf-8"
    )


def origin(request: web.Request) -> str:
    """Scheme and host the client used, for absolute URLs back to the simulator."""
    return f"{request.scheme}://{request.host}"


def fault_reset(quota, params: Mapping[str, Any], now: float, default_s: float) -> float:
    """The reset an injected rate-limit error announces (epoch s).

    The fault's ``reset_in_s`` wins; else the window of a rule the scenario
    configured; else (no rule, or only the implicit default one, whose
    window may be an hour long) ``default_s`` from now.
    """
    if "reset_in_s" in params:
        return now + float(params["reset_in_s"])
    if quota is not None and not quota.rule.implicit:
        return quota.reset
    return now + default_s


def endpoint_name(path: str) -> str:
    """A route path as the providers' docs name endpoints: ``/2/users/{id}`` and
    ``/user/{uid:\\d+}`` become ``/2/users/:id`` and ``/user/:uid``."""
    return re.sub(r"\{(\w+)(?::[^}]*)?\}", r":\1", path)


def int_param(query: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(query.get(name, default))
    except (TypeError, ValueError):
        return default


def bearer_token(request: web.Request, schemes: Mapping[str, str]) -> Credentials | None:
    """The token of an ``Authorization: <scheme> <token>`` header, if any.

    ``schemes`` maps a lower-case scheme word to the name recorded for it.
    Returns ``None`` without a header and a credentials object with
    ``problem="malformed"`` for an unknown scheme.
    """
    header = request.headers.get("Authorization")
    if not header:
        return None
    word, _, value = header.strip().partition(" ")
    scheme = schemes.get(word.lower())
    value = value.strip()
    if scheme is None or not value:
        return Credentials(problem="malformed")
    return Credentials(value, scheme)


class ProviderSim:
    """Base of the simulated providers; subclasses fill in the data.

    A subclass is registered by one line in ``simulator.providers.REGISTRY``,
    which checks its facts (``simulator.providers.check_class``) when it loads.
    """

    #: the path prefix (``/<NAME>/``) and the scenario's ``provider``: netsync's name for it
    NAME = ""
    #: the relations it serves, the one a sync reads by default first
    RELATIONS: tuple[str, ...] = ()
    #: its connections' id space: ``NATIVE_IDS(index, key)`` and ``NATIVE_IDS.many(lo, hi, key)``
    #: give native integers, unique per account (``simulator.identities``)
    NATIVE_IDS: Any = None
    #: a connection id as ``/_sim/truth`` gives it (what ``stored_form`` returns), as a regex
    ID_FORM = ""
    #: account ids are case-insensitive (GitHub logins): looked up in lower case
    CASE_INSENSITIVE_IDS = False
    #: scenario accounts may name other scenario accounts among their connections
    #: (``connections_include``): pages render a connection from its native id, and an
    #: included account's is ``included_native`` (by default its id, so it must be numeric)
    INCLUDABLE = False
    #: the provider's real, documented limits, as scenario rules (each with its source in
    #: a comment): announced and enforced when the scenario names no rule for it. Empty:
    #: none published, nothing enforced
    RATE_LIMITS: tuple[Mapping[str, Any], ...] = ()
    #: rate-limit windows start at wall-clock multiples of the window (Mastodon resets at
    #: e.g. 13:50:00); otherwise at the first call. A scenario rule's ``align`` overrides
    ALIGNED_WINDOWS = False
    #: every endpoint has its own windows (X: "Each endpoint has its own limits")
    PER_ENDPOINT_WINDOWS = False
    #: windows roll (the calls of the last ``window_s``), they do not reset (Facebook)
    ROLLING_WINDOWS = False
    #: a 429 of an announced limit says ``Retry-After`` (seconds until the reset) too
    RETRY_AFTER_ON_LIMIT = False
    #: query parameters that make a call a paging one (a rule's ``applies_to: "paging"``)
    PAGING_PARAMS: tuple[str, ...] = ()
    #: federated: accounts live on instances (rules and usage may name one)
    FEDERATED = False
    #: its lists are newest first (connections added at run time come first); otherwise
    #: oldest first (they come last)
    NEWEST_FIRST = True
    #: successful GETs carry an ``ETag`` (of the token and the body) and ``If-None-Match``
    #: with it answers ``304 Not Modified``
    ETAGS = False
    #: such a 304 uses no quota when the call was authorized (GitHub's documented rule)
    FREE_NOT_MODIFIED = False
    #: USD per billed resource (``call.resources``: X's users returned); 0: free
    PRICE_USD = 0.0
    #: the page faults (``PAGE_KINDS``) its page handler renders
    PAGE_FAULTS: frozenset[str] = frozenset()
    #: lifetime of tokens its refresh endpoint issues (the scenario's ``token_ttl_s`` overrides)
    TOKEN_TTL_S = 7200
    #: its refresh endpoint rotates the refresh token (the old one dies on use)
    ROTATES_REFRESH = False
    #: What a client asks for the profile and the first page of ``{account}``
    #: (path and query under the prefix): tests and tools call any provider alike.
    SAMPLE_PATHS: Mapping[str, str] = {}
    #: Static headers the provider sends on every response.
    BASE_HEADERS: Mapping[str, str] = {}
    #: Public data readable without a token (GitHub, Mastodon).
    ANONYMOUS_OK = False
    ROUTES: tuple[Route, ...] = ()
    ERROR_ROWS: tuple[ErrorRow, ...] = ()
    #: Which row each standard condition renders.
    ROW_MISSING_AUTH = ""
    ROW_MALFORMED_AUTH = ""
    ROW_UNKNOWN_TOKEN = ""
    ROW_EXPIRED_TOKEN = ""
    ROW_REVOKED_TOKEN = ""
    ROW_NOT_FOUND = ""
    #: A path the provider does not serve (default: ``ROW_NOT_FOUND``).
    ROW_UNKNOWN_PATH = ""
    ROW_OUTAGE = ""
    #: Page size when the client asks for none (the real default), and the most it serves.
    PAGE_SIZE = 0
    MAX_PAGE_SIZE = 0

    def __init__(self) -> None:
        self._rows = {}
        for row in self.ERROR_ROWS:
            self._rows.setdefault(row.name, row)

    # --- the error table ------------------------------------------------------

    def row(self, name: str) -> ErrorRow:
        return self._rows[name]

    def find_rows(self, selector: Mapping[str, Any]) -> list[ErrorRow]:
        """The rows a fault selector means; the fault picks one per firing.

        Every given field of ``name``/``code``/``subcode``/``status`` must
        match. A row's own name selects that row; a family name, or a code
        whose first row belongs to a family, selects the whole family (the
        same condition under its many messages); otherwise the first
        matching row in the table. Raises ``ScenarioError`` when
        nothing matches, listing the table, so a mistyped fault fails when
        it is added rather than silently never firing.
        """
        wanted = {k: selector[k] for k in ("name", "code", "subcode", "status") if k in selector}
        if not wanted:
            raise ScenarioError(
                f"{self.NAME} error fault: give 'name', 'code', 'subcode' or 'status'"
            )
        rows = [
            r
            for r in self.ERROR_ROWS
            if ("name" not in wanted or wanted["name"] in (r.name, r.family))
            and ("code" not in wanted or wanted["code"] == r.code)
            and ("subcode" not in wanted or wanted["subcode"] == r.subcode)
            and ("status" not in wanted or wanted["status"] == r.status)
        ]
        exact = [r for r in rows if r.name == wanted.get("name")]
        if exact:
            rows = exact[:1]
        elif rows and rows[0].family is None:
            rows = rows[:1]  # a plain code/status picks the table's first row for it
        else:
            # a family (Facebook's bad-token messages): the fault picks one per firing
            rows = [r for r in rows if r.family == rows[0].family] if rows else rows
        if not rows:
            rows = self.synthesize_rows(wanted)
            # Known by name from now on: a revoked token answers with it on
            # every later call (row() looks rows up by name).
            for row in rows:
                self._rows.setdefault(row.name, row)
        if not rows:
            table = ", ".join(f"{r.name}({r.status}/{r.code}/{r.subcode})" for r in self.ERROR_ROWS)
            raise ScenarioError(f"{self.NAME}: no error row matches {wanted}; rows: {table}")
        return rows

    def synthesize_rows(self, wanted: Mapping[str, Any]) -> list[ErrorRow]:
        """Rows for codes the table only describes as a range (Facebook 200-299)."""
        return []

    # --- hooks ------------------------------------------------------------------

    def read_credentials(self, request: web.Request) -> Credentials:
        creds = bearer_token(request, {"bearer": "bearer"})
        return creds or Credentials()

    def call_kind(self, route: Route, request: web.Request) -> str:
        return route.kind

    def sample_account_id(self, stem: str) -> str:
        """An account id of this provider's form made from ``stem`` (letters, digits and
        ``-``): what tests and tools name a scenario account, so that netsync, which
        checks an id's form (``providers.<name>.ACCOUNT_ID_PATTERN``), takes it."""
        return stem

    def sample_path(self, kind: str, account_id: str) -> str:
        """``SAMPLE_PATHS[kind]`` ("profile" or "page") for ``account_id``."""
        return self.SAMPLE_PATHS[kind].format(account=account_id)

    def endpoints(self) -> set[str]:
        """Its endpoints' names as rules give them (``endpoint_name`` of each route)."""
        return {endpoint_name(route.path) for route in self.ROUTES if route.authenticated}

    def is_paging(self, request: web.Request) -> bool:
        """Whether a call pages (one of ``PAGING_PARAMS`` present and not empty)."""
        query = request.query
        return any(query.get(name) for name in self.PAGING_PARAMS)

    def announces(self, rule) -> bool:
        """Whether its rate-limit headers speak of this kind of rule (all, by default)."""
        return True

    def native_of(self, connection_id: str) -> int | None:
        """The native id of a connection id in the provider's form (``stored_form``'s
        inverse); None when the id is not of that form."""
        if not re.fullmatch(self.ID_FORM, connection_id):
            return None
        return int(connection_id)

    def normalize_id(self, account_id: str) -> str:
        """The lookup form of an account id (``CASE_INSENSITIVE_IDS``: lower case)."""
        return account_id.lower() if self.CASE_INSENSITIVE_IDS else account_id

    def included_native(self, sim, account_id: str) -> int:
        """``INCLUDABLE``: the native id another account's network lists scenario
        account ``account_id`` under: what its own profile answers with."""
        return int(account_id)

    def includable_id(self, account_id: str) -> bool:
        """Whether ``connections_include`` may name this account id (see ``included_native``)."""
        return account_id.isdigit()

    def redeem(self, sim, refresh_token: str, now: float):
        """Its refresh endpoint's exchange: a new access token (``None``: refused)."""
        ttl = sim.scenario.token_ttl_s.get(self.NAME, self.TOKEN_TTL_S)
        return sim.tokens.redeem(self.NAME, refresh_token, now, ttl, self.ROTATES_REFRESH)

    def served_at(self, call) -> str:
        """The path the call's instance is served under (``/mastodon/a.example``)."""
        return f"/{self.NAME}/{call.instance}" if call.instance else f"/{self.NAME}"

    def lookup_account(self, sim, route: Route, raw_id: str, call):
        return sim.accounts.get((self.NAME, self.normalize_id(raw_id)))

    def unknown_token_row(self, call) -> str:
        return self.ROW_UNKNOWN_TOKEN

    def stored_form(self, n: int) -> tuple[str, str | None]:
        """(id as the service should store it, handle) of the person with native id ``n``."""
        raise NotImplementedError

    def connections(self, space, lo: int, hi: int) -> list[tuple[str, str | None]]:
        """The stored forms of list positions ``lo .. hi-1``: what ``/_sim/truth`` serves."""
        return [self.stored_form(n) for n in space.slice(lo, hi)[1]]

    def authorize(self, sim, call) -> str | None:
        """A row name when the token may not read this account (default: it may)."""
        return None

    def revoked_row(self, call, fault) -> str:
        """The row a token revoked by ``fault`` answers with from now on."""
        return self.ROW_REVOKED_TOKEN

    def render_error(self, sim, row: ErrorRow, call, params: Mapping[str, Any]) -> web.Response:
        raise NotImplementedError

    def limit_headers(self, quota) -> dict[str, str]:
        """Rate-limit headers of a successful response (none by default: LinkedIn)."""
        return {}

    def render_rate_limited(self, sim, quota, call) -> web.Response:
        raise NotImplementedError

    # --- helpers for subclasses -------------------------------------------------

    @staticmethod
    def applied(call, fault) -> None:
        """Note that a page fault shaped this call's answer (log and stats)."""
        call.fault_id, call.injected = fault.id, fault.kind

    def respond(
        self,
        body: Any,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        merged = dict(self.BASE_HEADERS)
        if headers:
            merged.update(headers)
        return json_response(body, status, merged)

    @staticmethod
    def epoch(value: float) -> str:
        return str(math.ceil(value))
