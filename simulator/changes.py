"""Networks that change at run time: ``POST /_sim/changes`` follows and unfollows.

A change names an account's relation and what to ``add`` (a count of new,
made-up connections, or ids in the provider's form) and ``remove`` (ids now
in it). Added connections are the newest (the last one given the newest of
all): they come first in a newest-first list and last in an oldest-first one
(``ProviderSim.NEWEST_FIRST``), and every page, ETag, total and
``/_sim/truth`` follows. Only the change is stored (``ConnectionSpace``): the
rest of the network stays computed from its index.

The whole request is checked before anything changes: one bad id rejects it.
"""

from __future__ import annotations

from typing import Any

from .errors import ScenarioError
from .providers import PROVIDER_SIMS

#: the most connections one change may make up (``"add": <n>``)
MAX_ADD = 1_000_000
FIELDS = {"provider", "account_id", "relation", "add", "remove", "instance"}


def apply_change(sim, body: Any) -> dict:
    """Check ``body`` and apply it to ``sim``; the answer of ``POST /_sim/changes``."""
    if not isinstance(body, dict):
        raise ScenarioError("expected a JSON object")
    unknown = set(body) - FIELDS
    if unknown:
        raise ScenarioError(f"unknown field(s) {sorted(unknown)} (known: {sorted(FIELDS)})")
    name = body.get("provider")
    provider = PROVIDER_SIMS.get(name) if isinstance(name, str) else None
    if provider is None:
        raise ScenarioError(f"unknown provider {name!r} (known: {', '.join(PROVIDER_SIMS)})")
    instance = body.get("instance")
    if instance is not None and not provider.FEDERATED:
        raise ScenarioError(f"{name} has no instances")
    account_id = body.get("account_id")
    if not isinstance(account_id, str) or not account_id:
        raise ScenarioError("'account_id' is required (a scenario account's id)")
    account = sim.account(name, account_id)
    if account is None or (instance is not None and account.instance != instance):
        on = f" on instance {instance!r}" if instance is not None else ""
        raise ScenarioError(f"unknown account {name}/{account_id}{on}")
    relation = body.get("relation") or provider.RELATIONS[0]
    if relation not in provider.RELATIONS:
        raise ScenarioError(f"'relation': {name} relations are {list(provider.RELATIONS)}")
    space = account.space(relation)
    where = f"{name}/{account.id} {relation}"

    add = body.get("add", 0)
    remove = body.get("remove", [])
    if not isinstance(remove, list):
        raise ScenarioError("'remove' must be a list of ids")
    gone = _natives(provider, remove, "remove")
    for connection_id, native in zip(remove, gone):
        if space.rank_of(native) is None:
            raise ScenarioError(f"remove: {connection_id} is not in {where}")
    if isinstance(add, int) and not isinstance(add, bool):
        if not 0 <= add <= MAX_ADD:
            raise ScenarioError(f"'add' must be a count of 0..{MAX_ADD} or a list of ids")
        new: list[int] | None = None
    elif isinstance(add, list):
        new = _natives(provider, add, "add")
        for connection_id, native in zip(add, new):
            if native in gone:
                raise ScenarioError(f"{connection_id} is both added and removed")
            if space.rank_of(native) is not None:
                raise ScenarioError(f"add: {connection_id} is already in {where}")
    else:
        raise ScenarioError("'add' must be a count or a list of ids")
    if not gone and not add:
        raise ScenarioError("nothing to change: give 'add' and/or 'remove'")

    for native in gone:
        space.remove(native)
    if new is None:
        new = space.fresh_natives(add)
    for native in new:
        space.add(native)
    return {
        "provider": name,
        "account_id": account.id,
        "relation": relation,
        "added": [provider.stored_form(n)[0] for n in new],
        "removed": [provider.stored_form(n)[0] for n in gone],
        "count": space.size,
    }


def _natives(provider, ids: list, field: str) -> list[int]:
    """Native ids of connection ids in the provider's form (numbers accepted for numeric
    forms), each once."""
    out = []
    for raw in ids:
        text = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
        native = provider.native_of(text) if isinstance(text, str) else None
        if native is None:
            raise ScenarioError(
                f"{field}: {raw!r} is not a {provider.NAME} connection id "
                f"(the form of /_sim/truth: {provider.ID_FORM})"
            )
        out.append(native)
    if len(set(out)) != len(out):
        raise ScenarioError(f"{field}: an id is given twice")
    return out
