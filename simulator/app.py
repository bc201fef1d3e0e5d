"""The aiohttp application: every provider under ``/<provider>/…`` plus ``/_sim/``.

Every provider request goes through one pipeline, in this order:

1. identify: path kind (profile/page/token), endpoint, paging, token, account;
2. faults: the ones that fire may answer the call (outage, error row,
   dropped connection), change token state (revoke, expire), set latency or
   bend the page the handler renders (pagination bugs); an answer they make
   uses no quota;
3. auth: missing, malformed, unknown, expired or revoked token -> the
   provider's own error for that condition, the call counted as one without
   a token (by its address), as the real throttles count it;
4. account: unknown account (or one the token may not read) -> not found;
5. quota: a rule that refuses the call -> the provider's rate-limit answer
   (its headers; ``Retry-After`` where the provider sends one);
6. the provider's handler renders the profile or page (or the error of 3-4);
   where the provider sends ETags, a matching ``If-None-Match`` makes it a
   ``304 Not Modified`` (GitHub: free of quota when authorized);
7. the call is counted against every rule it meets, and the answer carries
   the provider's rate-limit headers for the one with the fewest calls left;
8. latency, then the call is logged and counted in the stats.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import control, federation, push
from .calls import Call
from .faults import PAGE_KINDS, TERMINAL_KINDS
from .providers import PROVIDER_SIMS
from .providers.base import ProviderSim, Route, endpoint_name
from .ratelimit import Admission, tightest
from .scenario import Latency, Scenario, normalize_account_id, parse_scenario
from .state import Simulator

SIM = web.AppKey("simulator", Simulator)


def make_app(
    scenario: dict | Scenario | None = None,
    *,
    clock: Callable[[], float] = time.time,
    log_limit: int = 200_000,
) -> web.Application:
    """An application serving ``scenario`` (a scenario dict, parsed or not).

    ``clock`` (epoch seconds) is injectable so tests can move time for
    token expiry and rate-limit windows.
    """
    parsed = scenario if isinstance(scenario, Scenario) else parse_scenario(scenario)
    sim = Simulator(parsed, clock, log_limit)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[SIM] = sim
    push.add_routes(app, sim)  # the push channels, before the providers' catch-all paths
    federation.add_routes(app, sim)
    for provider in PROVIDER_SIMS.values():
        for route in provider.ROUTES:
            app.router.add_route(
                route.method, f"/{provider.NAME}{route.path}", _endpoint(sim, provider, route)
            )
        if provider.FEDERATED:
            # every instance under /<provider>/<instance>/… (after the default's paths, so
            # those win: no instance is named like their first segment)
            for route in provider.ROUTES:
                app.router.add_route(
                    route.method,
                    f"/{provider.NAME}/{{instance}}{route.path}",
                    _endpoint(sim, provider, route),
                )
        app.router.add_route("*", f"/{provider.NAME}/{{tail:.*}}", _unknown_path(sim, provider))
    control.add_routes(app, sim)
    return app


def client_ip(request: web.Request) -> str:
    """The caller's address; an egress proxy's X-Forwarded-For wins (ip-scoped quotas)."""
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded:
        return forwarded.split(",")[0].strip()
    return request.remote or "unknown"


def _endpoint(sim: Simulator, provider: ProviderSim, route: Route):
    endpoint = endpoint_name(route.path)

    async def handle(request: web.Request) -> web.StreamResponse:
        call = Call(
            sim.clock(),
            provider.NAME,
            provider.call_kind(route, request),
            request.path,
            client_ip(request),
            request,
        )
        call.relation = route.relation
        call.endpoint = endpoint
        call.instance = request.match_info.get("instance")
        call.paging = provider.is_paging(request)
        creds = None
        if route.authenticated:
            creds = provider.read_credentials(request)
            call.token, call.scheme = creds.token, creds.scheme
        else:
            call.form = await request.post()
            # an OAuth form field, or (Bluesky's refreshSession) the Authorization header
            call.token = call.form.get("refresh_token") or provider.read_credentials(request).token
        _identify_account(sim, provider, route, request, call)
        response, latency = _serve(sim, provider, route, call, creds)
        delay = sim.latency_s(provider.NAME, latency)
        if delay:
            await asyncio.sleep(delay)
        call.status = 0 if call.injected == "drop" else response.status
        sim.log.append(call)
        sim.stats.record(call)
        return response

    return handle


def _identify_account(
    sim: Simulator, provider: ProviderSim, route: Route, request: web.Request, call: Call
) -> None:
    if route.account_param is not None:
        # a path part, or a query parameter (Bluesky's XRPC ``?actor=``)
        raw = request.match_info.get(
            route.account_param, request.query.get(route.account_param, "")
        )
        call.account = provider.lookup_account(sim, route, raw, call)
        if call.account is not None and call.account.instance != call.instance:
            call.account = None  # an account lives on its own instance only
        call.account_id = (
            call.account.key[1] if call.account else normalize_account_id(provider.NAME, raw)
        )
        return
    if route.authenticated:
        owner = sim.tokens.get(provider.NAME, call.token)
    else:
        owner = sim.tokens.refresh.get((provider.NAME, call.token or ""))
    if owner is not None:
        call.account_id = owner.account_id
        call.account = sim.accounts.get((provider.NAME, owner.account_id))
        if call.account is not None and call.account.instance != call.instance:
            call.account = None


def _serve(sim: Simulator, provider: ProviderSim, route: Route, call: Call, creds):
    """The response for a call and the latency override of a fault, if any."""
    terminal, latency, mods = _apply_faults(sim, provider, call)
    problem = None
    if route.authenticated:
        problem = _auth_problem(sim, provider, route, call, creds)
        if problem is None and call.token is not None:
            call.authenticated = True
            call.owner = sim.tokens.get(provider.NAME, call.token).account_id
    if terminal is not None:
        call.fault_id, call.injected = terminal.id, terminal.kind
        if terminal.kind == "drop":
            # "drop" quirk: abort the socket; aiohttp discards the response below
            if call.request.transport is not None:
                call.request.transport.abort()
            return web.Response(status=599), latency
        if terminal.kind == "outage":
            row = provider.row(provider.ROW_OUTAGE)
        else:
            rows = provider.find_rows(terminal.raw)
            row = terminal.rng.choice(rows) if len(rows) > 1 else rows[0]
        return provider.render_error(sim, row, call, terminal.raw), latency
    if not route.authenticated:
        return getattr(provider, route.handler)(sim, call, mods), latency
    if problem is None and call.account is None:
        problem = provider.ROW_NOT_FOUND
    if problem is None:
        problem = provider.authorize(sim, call)
    admission = sim.limiter.evaluate(call)
    if admission.rejected is not None:
        call.rate_limited = True
        return _rate_limited(sim, provider, call, admission), latency
    if problem is not None:
        response = provider.render_error(sim, provider.row(problem), call, {})
    else:
        response = getattr(provider, route.handler)(sim, call, mods)
    free = False
    if provider.ETAGS and route.method == "GET" and response.status == 200:
        response, free = _conditional(provider, call, response)
    if not free:
        admission.charge()
        call.counted = True
    quota = tightest(admission.quotas(), provider.announces)
    if quota is not None:
        response.headers.update(provider.limit_headers(quota))
    return response, latency


def _rate_limited(
    sim: Simulator, provider: ProviderSim, call: Call, admission: Admission
) -> web.Response:
    """The provider's answer to a call a rule refuses. Its headers speak for that rule
    if the provider announces it, else for the tightest one it does announce (if
    any); a hidden rule (``publish: false``) adds ``Retry-After``, as does an
    announced one where the provider sends it (``RETRY_AFTER_ON_LIMIT``)."""
    quota = admission.rejected
    response = provider.render_rate_limited(sim, quota, call)
    for name in provider.limit_headers(quota):
        response.headers.popall(name, None)
    announced = quota.rule.publish and provider.announces(quota.rule)
    speaks = quota if announced else tightest(admission.quotas(), provider.announces)
    if speaks is not None:
        response.headers.update(provider.limit_headers(speaks))
    if not quota.rule.publish or (announced and provider.RETRY_AFTER_ON_LIMIT):
        response.headers["Retry-After"] = str(max(1, math.ceil(quota.reset - call.t)))
    return response


def _conditional(provider: ProviderSim, call: Call, response: web.Response):
    """Tag a successful GET (``W/"…"``, of the token and the body, as GitHub's are tied to
    the token) and answer ``304 Not Modified`` to an ``If-None-Match`` naming it.

    Returns (response, free): a 304 uses no quota where the provider says so for an
    authorized call (``FREE_NOT_MODIFIED``). The 304 has no body and carries the tag
    in strong form, as GitHub's recorded ones do (weak comparison: ``W/`` is ignored).
    """
    digest = hashlib.blake2b(digest_size=32)  # 64 hex digits, as GitHub's are now
    digest.update((call.token or "").encode() + b"\0")
    digest.update(response.body)
    tag = digest.hexdigest()
    wanted = call.request.headers.get("If-None-Match")
    if wanted is not None and _names_tag(wanted, tag):
        not_modified = web.Response(
            status=304, headers={**provider.BASE_HEADERS, "ETag": f'"{tag}"'}
        )
        return not_modified, provider.FREE_NOT_MODIFIED and call.authenticated
    response.headers["ETag"] = f'W/"{tag}"'
    return response, False


def _names_tag(header: str, tag: str) -> bool:
    """``If-None-Match`` (``*`` or a list of tags, weak or strong) matches ``tag``."""
    for item in header.split(","):
        item = item.strip()
        if item == "*" or item.removeprefix("W/").strip('"') == tag:
            return True
    return False


def _auth_problem(
    sim: Simulator, provider: ProviderSim, route: Route, call: Call, creds
) -> str | None:
    if creds.problem is not None:
        return provider.ROW_MALFORMED_AUTH
    if call.token is None:
        if provider.ANONYMOUS_OK and route.account_param is not None:
            return None
        return provider.ROW_MISSING_AUTH
    problem = sim.tokens.problem(provider.NAME, call.token, call.t)
    if problem is None and not _token_of_this_instance(sim, provider, call):
        problem = "unknown"  # a token is an instance's own: another instance never issued it
    if problem == "unknown":
        return provider.unknown_token_row(call)
    if problem == "expired":
        return provider.ROW_EXPIRED_TOKEN
    if problem == "revoked":
        return sim.tokens.get(provider.NAME, call.token).revoked_row
    return None


def _token_of_this_instance(sim: Simulator, provider: ProviderSim, call: Call) -> bool:
    if not provider.FEDERATED:
        return True
    owner = sim.tokens.get(provider.NAME, call.token)
    account = sim.accounts.get((provider.NAME, owner.account_id)) if owner else None
    return account is None or account.instance == call.instance


def _apply_faults(sim: Simulator, provider: ProviderSim, call: Call):
    """Fire the matching faults: (terminal fault or None, latency override, page mods)."""
    terminal = None
    latency: Latency | None = None
    mods: dict[str, Any] = {}
    for fault in sim.faults.firing(call):
        kind = fault.kind
        if kind in TERMINAL_KINDS:
            terminal = terminal or fault
        elif kind == "latency":
            latency = Latency(float(fault.get("mean", 0)), float(fault.get("jitter", 0)))
        elif kind == "revoke_token":
            token = fault.get("token") or call.token
            if token:
                if any(k in fault.raw for k in ("name", "code", "subcode")):
                    row = fault.rng.choice(provider.find_rows(fault.raw)).name
                else:
                    row = provider.revoked_row(call, fault)
                sim.tokens.revoke(provider.NAME, token, row)
        elif kind == "expire_token":
            token = fault.get("token") or call.token
            if token:
                sim.tokens.expire(provider.NAME, token, call.t)
        elif kind in PAGE_KINDS:
            mods.setdefault(kind, fault)
    return terminal, latency, mods


def _unknown_path(sim: Simulator, provider: ProviderSim):
    async def handle(request: web.Request) -> web.Response:
        call = Call(sim.clock(), provider.NAME, "other", request.path, client_ip(request), request)
        row = provider.row(provider.ROW_UNKNOWN_PATH or provider.ROW_NOT_FOUND)
        response = provider.render_error(sim, row, call, {})
        call.status = response.status
        sim.log.append(call)
        sim.stats.record(call)
        return response

    return handle
