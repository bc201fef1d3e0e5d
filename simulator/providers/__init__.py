"""The simulated providers, one module each, served under ``/<name>/``.

A simulated provider is one module holding one ``ProviderSim`` subclass
(``simulator.providers.base``): its routes, error table and handlers, and
every fact about it (relations, id space, default rate limit, page faults,
token lifetime, ...) as class attributes. It is registered by one line
below; the scenario, fault, token and control modules derive their
per-provider tables from these classes.
"""

from __future__ import annotations

import importlib
import re

from ..errors import ProviderDefinitionError
from .base import PAGE_KINDS, ProviderSim

#: ``module:Class`` of each simulated provider, in the order the docs list them.
REGISTRY = (
    "simulator.providers.github:GitHub",
    "simulator.providers.twitter:Twitter",
    "simulator.providers.facebook:Facebook",
    "simulator.providers.linkedin:LinkedIn",
    "simulator.providers.mastodon:Mastodon",
    "simulator.providers.bluesky:Bluesky",
)


def load_registry(registry: tuple[str, ...]) -> dict[str, ProviderSim]:
    """Each registered class, checked (a bad fact fails here, naming the class), made once."""
    sims: dict[str, ProviderSim] = {}
    for entry in registry:
        module_name, _, class_name = entry.partition(":")
        cls = getattr(importlib.import_module(module_name), class_name, None)
        if cls is None:
            raise ProviderDefinitionError(f"{entry}: no class {class_name} in {module_name}")
        check_class(cls, entry)
        if cls.NAME in sims:
            raise ProviderDefinitionError(f"{entry}: provider name {cls.NAME!r} registered twice")
        sims[cls.NAME] = cls()
    return sims


def check_class(cls, where: str) -> None:
    """Refuse a class whose facts are missing or cannot be right, naming it (the
    registry runs this at import, so a slip fails there, not on some later call)."""

    def bad(fact: str, why: str):
        raise ProviderDefinitionError(f"{where}: {fact} {why}")

    if not (isinstance(cls, type) and issubclass(cls, ProviderSim)):
        bad("", "is not a ProviderSim subclass")
    if not (isinstance(cls.NAME, str) and cls.NAME.isidentifier() and cls.NAME.islower()):
        bad("NAME", f"must be a lower-case identifier, got {cls.NAME!r}")
    if not cls.RELATIONS or not all(isinstance(r, str) and r for r in cls.RELATIONS):
        bad("RELATIONS", f"must name one or more relations, got {cls.RELATIONS!r}")
    if not (callable(cls.NATIVE_IDS) and callable(getattr(cls.NATIVE_IDS, "many", None))):
        bad("NATIVE_IDS", "must be an id space (simulator.identities.PermutedIds or alike)")
    try:
        re.compile(cls.ID_FORM)
    except (re.error, TypeError):
        bad("ID_FORM", f"must be a regular expression, got {cls.ID_FORM!r}")
    if not cls.ID_FORM:
        bad("ID_FORM", "must say what a connection id looks like")
    if not 1 <= cls.PAGE_SIZE <= cls.MAX_PAGE_SIZE:
        bad("PAGE_SIZE", f"must be 1..MAX_PAGE_SIZE, got {cls.PAGE_SIZE}/{cls.MAX_PAGE_SIZE}")
    if not set(cls.PAGE_FAULTS) <= set(PAGE_KINDS):
        bad("PAGE_FAULTS", f"must be page fault kinds {PAGE_KINDS}, got {cls.PAGE_FAULTS!r}")
    if not isinstance(cls.RATE_LIMITS, tuple) or not all(
        isinstance(rule, dict) and {"limit", "window_s"} <= set(rule) for rule in cls.RATE_LIMITS
    ):
        bad("RATE_LIMITS", "must be a tuple of scenario rules ({'limit', 'window_s', ...})")
    if cls.PRICE_USD < 0:
        bad("PRICE_USD", f"must be a price in USD, got {cls.PRICE_USD!r}")
    if set(cls.SAMPLE_PATHS) != {"profile", "page"}:
        bad("SAMPLE_PATHS", f"must give the 'profile' and 'page' paths, got {cls.SAMPLE_PATHS!r}")
    if not cls.ROUTES:
        bad("ROUTES", "must serve at least a profile and a page")
    for route in cls.ROUTES:
        if not callable(getattr(cls, route.handler, None)):
            bad("ROUTES", f"{route.path}: no handler method {route.handler!r}")
    names = {row.name for row in cls.ERROR_ROWS}
    for fact in (
        "ROW_MISSING_AUTH",
        "ROW_MALFORMED_AUTH",
        "ROW_UNKNOWN_TOKEN",
        "ROW_EXPIRED_TOKEN",
        "ROW_REVOKED_TOKEN",
        "ROW_NOT_FOUND",
        "ROW_OUTAGE",
    ):
        if getattr(cls, fact) not in names:
            bad(fact, f"must name a row of ERROR_ROWS, got {getattr(cls, fact)!r}")
    if cls.ROW_UNKNOWN_PATH and cls.ROW_UNKNOWN_PATH not in names:
        bad("ROW_UNKNOWN_PATH", f"must name a row of ERROR_ROWS, got {cls.ROW_UNKNOWN_PATH!r}")


#: Provider name -> its (stateless) simulator; state lives in ``simulator.state.Simulator``.
PROVIDER_SIMS: dict[str, ProviderSim] = load_registry(REGISTRY)


def sample_account_id(provider: str, stem: str) -> str:
    """An account id of ``provider``'s form made from ``stem`` (``ProviderSim.sample_account_id``;
    ``stem`` itself for a name no provider has, as tests of unknown providers want)."""
    sim = PROVIDER_SIMS.get(provider)
    return sim.sample_account_id(stem) if sim is not None else stem
