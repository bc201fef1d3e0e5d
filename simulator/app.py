"""The aiohttp application: every provider under ``/<provider>/…`` plus ``/_sim/``.

Every provider request goes through one pipeline, in this order:

1. identify: path kind (profile/page/token), token, account;
2. faults: the ones that fire may answer the call (outage, error row,
   dropped connection), change token state (revoke, expire), set latency or
   bend the page the handler renders (pagination bugs);
3. auth: missing, malformed, unknown, expired or revoked token -> the
   provider's own error for that condition;
4. account: unknown account (or one the token may not read) -> not found;
5. quota: a spent rate-limit window -> the provider's rate-limit answer;
6. the provider's handler renders the profile or page, with quota headers;
7. latency, then the call is logged and counted.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import control
from .calls import Call
from .faults import PAGE_KINDS, TERMINAL_KINDS
from .providers import PROVIDER_SIMS
from .providers.base import ProviderSim, Route
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
    for provider in PROVIDER_SIMS.values():
        for route in provider.ROUTES:
            app.router.add_route(
                route.method, f"/{provider.NAME}{route.path}", _endpoint(sim, provider, route)
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


def _serve(sim: Simulator, provider: ProviderSim, route: Route, call: Call, creds):
    """The response for a call and the latency override of a fault, if any."""
    terminal, latency, mods = _apply_faults(sim, provider, call)
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
    problem = _auth_problem(sim, provider, route, call, creds)
    if problem is None and call.account is None:
        problem = provider.ROW_NOT_FOUND
    if problem is None:
        problem = provider.authorize(sim, call)
    if problem is not None:
        return provider.render_error(sim, provider.row(problem), call, {}), latency
    admitted, quota = sim.limiter.admit(provider.NAME, call.kind, call.token, call.remote, call.t)
    if not admitted:
        call.rate_limited = True
        response = provider.render_rate_limited(sim, quota, call)
        if not quota.rule.publish:  # a hidden limit: say only when to come back
            for name in provider.limit_headers(quota):
                response.headers.popall(name, None)
            response.headers["Retry-After"] = str(max(1, math.ceil(quota.reset - call.t)))
        return response, latency
    response = getattr(provider, route.handler)(sim, call, mods)
    if quota is not None and response.status < 400:
        response.headers.update(provider.limit_headers(quota))
    return response, latency


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
    if problem == "unknown":
        return provider.unknown_token_row(call)
    if problem == "expired":
        return provider.ROW_EXPIRED_TOKEN
    if problem == "revoked":
        return sim.tokens.get(provider.NAME, call.token).revoked_row
    return None


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
