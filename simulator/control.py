"""Control endpoints under ``/_sim/``: truth, stats, call log, faults, accounts,
changes, reset.

These are for tests, the demo and benchmarks, outside every provider's
paths. Bad input is answered ``400 {"error": "<the reason>"}`` and changes
nothing (a request is checked whole before any of it applies); nothing here
is rate limited, delayed or counted.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .changes import apply_change
from .faults import FaultBook
from .providers import PROVIDER_SIMS
from .scenario import ScenarioError, parse_accounts, parse_scenario
from .state import validate_fault


def add_routes(app: web.Application, sim) -> None:
    handlers = ControlHandlers(sim)
    app.router.add_get("/_sim/health", handlers.health)
    app.router.add_get("/_sim/truth/{provider}/{account_id}", handlers.truth)
    app.router.add_get("/_sim/stats", handlers.stats)
    app.router.add_get("/_sim/calls", handlers.calls)
    app.router.add_get("/_sim/faults", handlers.get_faults)
    app.router.add_post("/_sim/faults", handlers.post_faults)
    app.router.add_get("/_sim/accounts", handlers.get_accounts)
    app.router.add_post("/_sim/accounts", handlers.post_accounts)
    app.router.add_get("/_sim/tokens", handlers.tokens)
    app.router.add_post("/_sim/changes", handlers.changes)
    app.router.add_post("/_sim/reset", handlers.reset)


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def _json_body(request: web.Request) -> Any:
    if not request.can_read_body:
        return {}
    try:
        return await request.json()
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"body is not JSON: {exc}") from None


def _float(value: str | None, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise ScenarioError(f"'{name}' must be a number") from None


class ControlHandlers:
    """The ``/_sim/`` handlers over one ``Simulator``."""

    def __init__(self, sim) -> None:
        self.sim = sim

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "accounts": len(self.sim.accounts)})

    async def truth(self, request: web.Request) -> web.Response:
        """``{"ids": [...], "handles": [...]}``: the network as the service should store it.

        Ids are strings in the provider's own form (GitHub "12345", LinkedIn
        "urn:li:person:…"); ``handles`` is parallel (LinkedIn: null, its API
        exposes none). ``relation`` picks followers/following; ``offset`` and
        ``limit`` slice a large network.
        """
        provider_name = request.match_info["provider"]
        provider = PROVIDER_SIMS.get(provider_name)
        if provider is None:
            return _bad_request(f"unknown provider {provider_name!r}")
        account = self.sim.account(provider_name, request.match_info["account_id"])
        instance = request.query.get("instance")
        if instance and not provider.FEDERATED:
            return _bad_request(f"{provider_name} has no instances")
        if account is None or (instance and account.instance != instance):
            return web.json_response({"error": "unknown account"}, status=404)
        relation = request.query.get("relation") or provider.RELATIONS[0]
        if relation not in provider.RELATIONS:
            return _bad_request(f"{provider_name} relations: {provider.RELATIONS}")
        space = account.space(relation)
        try:
            offset = int(request.query.get("offset", 0))
            limit = int(request.query.get("limit", space.size))
        except ValueError:
            return _bad_request("'offset' and 'limit' must be integers")
        lo = max(0, offset)
        pairs = provider.connections(space, lo, lo + max(0, limit))
        ids = [connection_id for connection_id, _ in pairs]
        handles = [handle for _, handle in pairs]
        return web.json_response(
            {
                "provider": provider_name,
                "account_id": account.id,
                "relation": relation,
                "count": space.size,
                "ids": ids,
                "handles": handles,
            }
        )

    async def stats(self, request: web.Request) -> web.Response:
        now = self.sim.clock()
        return web.json_response(self.sim.stats.to_json(now, self.sim.limiter.report()))

    async def calls(self, request: web.Request) -> web.Response:
        """The call log, filtered by ``provider``, ``token``, ``account``,
        ``since`` (epoch seconds, exclusive), ``since_seq`` and ``limit``."""
        q = request.query
        try:
            since = _float(q.get("since"), "since")
            since_seq = int(q["since_seq"]) if q.get("since_seq") else None
            limit = int(q["limit"]) if q.get("limit") else None
        except (ScenarioError, ValueError) as exc:
            return _bad_request(str(exc))
        log = self.sim.log
        entries = list(
            log.query(
                q.get("provider") or None,
                since,
                since_seq,
                q.get("token") or None,
                q.get("account") or None,
                limit,
            )
        )
        return web.json_response(
            {"calls": entries, "next_seq": log.next_seq, "dropped": log.dropped, "kept": len(log)}
        )

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"faults": self.sim.faults.to_json()})

    async def post_faults(self, request: web.Request) -> web.Response:
        """``{"add": [...]}``, ``{"remove": [ids]}``, ``{"clear": true}`` (may be
        combined: clear, then remove, then add), or ``{"faults": [...]}`` /
        a bare list to replace them all."""
        try:
            body = await _json_body(request)
            if isinstance(body, list):
                body = {"faults": body}
            if not isinstance(body, dict):
                raise ScenarioError("expected a JSON object or list")
            known = {"faults"} if "faults" in body else {"add", "remove", "clear"}
            unknown = set(body) - known
            if unknown:
                raise ScenarioError(f"unknown field(s) {sorted(unknown)}")
            # everything checked before anything changes
            FaultBook(self.sim.scenario.seed, validate_fault).parse_all(
                body.get("faults") or body.get("add") or []
            )
            remove = body.get("remove") or []
            if not isinstance(remove, list):
                raise ScenarioError("'remove' must be a list of fault ids")
            if not isinstance(body.get("clear", False), bool):
                raise ScenarioError("'clear' must be true or false")
        except ScenarioError as exc:
            return _bad_request(str(exc))
        if "faults" in body:
            self.sim.replace_faults(body["faults"] or [])
        else:
            if body.get("clear"):
                self.sim.clear_faults()
            if remove:
                self.sim.faults.remove([str(i) for i in remove])
            if body.get("add"):
                self.sim.add_faults(body["add"])
        return web.json_response({"faults": self.sim.faults.to_json()})

    async def get_accounts(self, request: web.Request) -> web.Response:
        provider = request.query.get("provider")
        return web.json_response(
            {
                "accounts": [
                    a.to_json()
                    for a in self.sim.accounts.values()
                    if provider is None or a.provider == provider
                ]
            }
        )

    async def post_accounts(self, request: web.Request) -> web.Response:
        """``{"accounts": [...]}`` (or a bare list) adds or replaces accounts by
        (provider, id); ``{"remove": [{"provider": P, "id": I}]}`` drops some."""
        try:
            body = await _json_body(request)
            if isinstance(body, list):
                body = {"accounts": body}
            if not isinstance(body, dict):
                raise ScenarioError("expected a JSON object or list")
            unknown = set(body) - {"accounts", "remove"}
            if unknown:
                raise ScenarioError(f"unknown field(s) {sorted(unknown)}")
            accounts = parse_accounts(body.get("accounts") or [])
            remove = body.get("remove") or []
            if not isinstance(remove, list) or not all(
                isinstance(item, dict)
                and item.get("provider") in PROVIDER_SIMS
                and item.get("id") not in (None, "")
                for item in remove
            ):
                raise ScenarioError("remove: expected objects with a known provider and an id")
        except ScenarioError as exc:
            return _bad_request(str(exc))
        removed = [
            item for item in remove if self.sim.remove_account(item["provider"], str(item["id"]))
        ]
        for account in accounts:
            self.sim.put_account(account)
        return web.json_response(
            {
                "upserted": [[a.provider, a.id] for a in accounts],
                "removed": removed,
                "count": len(self.sim.accounts),
            }
        )

    async def changes(self, request: web.Request) -> web.Response:
        """``{"provider", "account_id", "relation", "add": <n> | [ids], "remove": [ids]}``
        → ``{"added": [ids], "removed": [ids], "count"}`` (``simulator.changes``)."""
        try:
            change = apply_change(self.sim, await _json_body(request))
        except ScenarioError as exc:
            return _bad_request(str(exc))
        push = getattr(self.sim, "push", None)
        if push is not None:  # each change also goes out on the provider's channel
            push.publish(change)
        return web.json_response(change)

    async def tokens(self, request: web.Request) -> web.Response:
        q = request.query
        return web.json_response(
            {"tokens": self.sim.tokens.listing(q.get("provider"), q.get("account"))}
        )

    async def reset(self, request: web.Request) -> web.Response:
        """``{}``: stats, log, faults, quota counters, token states;
        ``{"accounts": true}``: also accounts and tokens back to the scenario's;
        ``{"scenario": {...}}``: start over from a new scenario."""
        try:
            body = await _json_body(request)
            if not isinstance(body, dict):
                raise ScenarioError("expected a JSON object")
            unknown = set(body) - {"accounts", "scenario"}
            if unknown:
                raise ScenarioError(f"unknown field(s) {sorted(unknown)}")
            if not isinstance(body.get("accounts", False), bool):
                raise ScenarioError("'accounts' must be true or false")
            if body.get("scenario") is not None:
                self.sim.load(parse_scenario(body["scenario"]))
            else:
                self.sim.reset(accounts=bool(body.get("accounts")))
        except ScenarioError as exc:
            return _bad_request(str(exc))
        return web.json_response(
            {"ok": True, "accounts": len(self.sim.accounts), "faults": self.sim.faults.to_json()}
        )
